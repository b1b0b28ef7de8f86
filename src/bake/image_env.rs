//! The environment a baked image gets: `HF_HOME` pointing at the baked cache (the `hf-cache`
//! arrangement) and `HF_HUB_OFFLINE=1` (unless turned off), and the base's cache variables that
//! would send a loader away from the baked cache pointed at it ([`correct_base`]).

use serde_json::{Value, json};

use crate::loaders::{self, Correction};
use crate::manifest::bake_table::{BakeSettings, ModelArrangement};
use crate::oci::model::string_list;

/// Environment variables the image gets.
pub fn image_env(hf_home: &str, offline: bool) -> Vec<(String, String)> {
    let mut env = vec![("HF_HOME".to_owned(), hf_home.to_owned())];
    if offline {
        env.push(("HF_HUB_OFFLINE".to_owned(), "1".to_owned()));
    }
    env
}

/// Environment variables an image baked with `settings` gets: [`image_env`] for the
/// `hf-cache` arrangement; for `files` only the offline switch (there is no cache for
/// `HF_HOME` to point at, and a base's cache variables are left alone).
pub fn env_for(settings: &BakeSettings) -> Vec<(String, String)> {
    let mut env = image_env(&settings.hf_home, settings.offline_env);
    if settings.layout == ModelArrangement::Files {
        env.retain(|(k, _)| k != "HF_HOME");
    }
    env
}

/// Points the base config's cache variables (`HF_HUB_CACHE`, `TRANSFORMERS_CACHE`, …) that
/// name another folder than the baked cache of `env`'s `HF_HOME` at it, in place; one
/// correction per variable, each a warning for the user. Nothing changes without `HF_HOME` in
/// `env` (the `files` arrangement) or without an `Env` in the base.
pub fn correct_base(config: &mut Value, env: &[(String, String)]) -> Vec<Correction> {
    let Some((_, home)) = env.iter().find(|(k, _)| k == "HF_HOME") else {
        return Vec::new();
    };
    let Some(inner) = config.get_mut("config").filter(|c| c.is_object()) else {
        return Vec::new();
    };
    let mut vars = string_list(&inner["Env"]);
    let corrected = loaders::correct(&mut vars, &format!("{}/hub", home.trim_end_matches('/')));
    if !corrected.is_empty() {
        inner["Env"] = json!(vars);
    }
    corrected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_cache_variable_is_pointed_at_the_baked_cache_in_place() {
        let mut config = json!({ "config": { "Env": ["A=1", "HF_HUB_CACHE=/data/hub", "B=2"] } });
        let env = image_env("/root/.cache/huggingface", true);
        let corrected = correct_base(&mut config, &env);
        assert_eq!(corrected.len(), 1, "{corrected:?}");
        assert_eq!(
            config["config"]["Env"],
            json!(["A=1", "HF_HUB_CACHE=/root/.cache/huggingface/hub", "B=2"])
        );
        // Without HF_HOME (the files arrangement) the base is left alone.
        let mut untouched = json!({ "config": { "Env": ["HF_HUB_CACHE=/data/hub"] } });
        assert!(correct_base(&mut untouched, &[]).is_empty());
        assert_eq!(
            untouched["config"]["Env"],
            json!(["HF_HUB_CACHE=/data/hub"])
        );
        // A config that is not an object is not touched (building refuses it later).
        let mut odd = json!("not an object");
        assert!(correct_base(&mut odd, &env).is_empty());
    }
}
