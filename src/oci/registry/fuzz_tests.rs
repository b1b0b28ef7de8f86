//! Fuzzing the `WWW-Authenticate` challenge of a registry (issue #14): any header text parses
//! without panicking, and a well-formed challenge (RFC 7235: a scheme, then `name=value`
//! parameters, values as tokens or quoted strings with `\`-escapes) gives back exactly the
//! scheme and parameters it was generated with. Run length and seed: see
//! `crate::test_support::fuzz`.

use std::collections::HashMap;

use proptest::prelude::*;

use super::parse_challenge;
use crate::test_support::fuzz::config;

/// One generated parameter value and how it is written.
#[derive(Debug, Clone)]
enum Value {
    /// A token (no quotes needed).
    Token(String),
    /// A quoted string: any printable text, `"` and `\` escaped.
    Quoted(String),
}

impl Value {
    fn text(&self) -> &str {
        match self {
            Value::Token(s) | Value::Quoted(s) => s,
        }
    }

    fn render(&self) -> String {
        match self {
            Value::Token(s) => s.clone(),
            Value::Quoted(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        }
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(Value::Token),
        // Realms are URLs, scopes hold `:` and `,`; anything printable may appear.
        r#"[ -~]{0,24}"#.prop_map(Value::Quoted),
        r"https://[a-z.]{1,10}/token\?a=b,c".prop_map(Value::Quoted),
    ]
}

proptest! {
    #![proptest_config(config(1))]

    /// Any header text: no panic; the scheme comes back lowercased and names are trimmed.
    #[test]
    fn arbitrary_challenges_never_panic(h in ".{0,120}") {
        let (scheme, params) = parse_challenge(&h);
        prop_assert_eq!(scheme.clone(), scheme.to_ascii_lowercase());
        for k in params.keys() {
            prop_assert_eq!(k.trim(), k.as_str());
        }
    }

    /// A well-formed challenge gives back its scheme (lowercased) and every parameter (names
    /// lowercased, values unescaped), whatever the separators' spacing.
    #[test]
    fn well_formed_challenges_give_back_their_parameters(
        scheme in prop::sample::select(vec!["Bearer", "bearer", "Basic", "BEARER"]),
        params in prop::collection::btree_map(
            prop::sample::select(vec!["realm", "Service", "scope", "error", "REALM_2", "x-y"]),
            value(),
            0..5,
        ),
        sep in prop::sample::select(vec![",", ", ", " , ", ",  "]),
    ) {
        let rendered: Vec<String> =
            params.iter().map(|(k, v)| format!("{k}={}", v.render())).collect();
        let header = format!("{scheme} {}", rendered.join(sep));
        let (got_scheme, got) = parse_challenge(&header);
        prop_assert_eq!(got_scheme, scheme.to_ascii_lowercase());
        let want: HashMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.text().to_owned()))
            .collect();
        prop_assert_eq!(got, want, "header: {}", header);
    }
}
