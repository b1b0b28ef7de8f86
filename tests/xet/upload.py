"""Uploads files to a Xet CAS with the reference uploader (the hf_xet package that
huggingface_hub installs), so xorbs, shards and hashes are exactly what the Hub's tooling makes.

Usage: python upload.py CAS_URL FILE...   Prints one JSON object per line:
{"path", "hash" (Xet file hash, API string form), "size", "sha256"}.
"""
import hashlib
import json
import sys

from hf_xet import XetSession


def main():
    endpoint, paths = sys.argv[1], sys.argv[2:]
    commit = XetSession().new_upload_commit(endpoint=endpoint)
    for path in paths:
        commit.start_upload_file(path, sha256=None)
    report = commit.wait_to_finish()
    by_sha = {u.xet_info.sha256: u.xet_info for u in report.uploads.values()}
    for path in paths:
        with open(path, "rb") as f:
            info = by_sha[hashlib.file_digest(f, "sha256").hexdigest()]
        print(json.dumps({"path": path, "hash": info.hash, "size": info.file_size, "sha256": info.sha256}))


if __name__ == "__main__":
    main()
