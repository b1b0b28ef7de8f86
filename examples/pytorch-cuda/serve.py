"""Loads the baked model offline (HF_HUB_OFFLINE=1 is set by `modelbake bake`) and embeds a sentence."""
import torch
from sentence_transformers import SentenceTransformer

device = "cuda" if torch.cuda.is_available() else "cpu"
model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device=device)
print(device, model.encode(["modelbake bakes models into images"]).shape)
