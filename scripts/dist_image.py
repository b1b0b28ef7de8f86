"""Writes the OCI image of modelbake itself (used by scripts/dist): FROM scratch, one layer per
platform holding the static binary at /usr/local/bin/modelbake, the CA bundle, /tmp (1777) and
a non-root user (uid/gid 65532) in /etc/passwd and /etc/group; one image index for all
platforms, tagged in an OCI layout.

Deterministic: sorted entries, fixed owner and mtime (SOURCE_DATE_EPOCH), gzip without a
timestamp; the same binaries give the same digests.

usage: dist_image.py LAYOUT TAG VERSION CA_BUNDLE ARCH=BINARY [ARCH=BINARY ...]
       (ARCH is an OCI architecture: amd64, arm64)
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import time

UID = 65532
PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nmodelbake:x:65532:65532:modelbake:/home/modelbake:/sbin/nologin\n"
GROUP = b"root:x:0:\nmodelbake:x:65532:\n"


def layer(binary, ca_bundle, mtime):
    """The layer tar (uncompressed) for one platform."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name, mode, data=None, owner=0):
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = owner
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        with open(binary, "rb") as f:
            exe = f.read()
        with open(ca_bundle, "rb") as f:
            ca = f.read()
        for name, mode, data, owner in sorted(
            [
                ("etc", 0o755, None, 0),
                ("etc/group", 0o644, GROUP, 0),
                ("etc/passwd", 0o644, PASSWD, 0),
                ("etc/ssl", 0o755, None, 0),
                ("etc/ssl/certs", 0o755, None, 0),
                ("etc/ssl/certs/ca-certificates.crt", 0o644, ca, 0),
                ("home", 0o755, None, 0),
                ("home/modelbake", 0o755, None, UID),
                ("tmp", 0o1777, None, 0),
                ("usr", 0o755, None, 0),
                ("usr/local", 0o755, None, 0),
                ("usr/local/bin", 0o755, None, 0),
                ("usr/local/bin/modelbake", 0o755, exe, 0),
            ]
        ):
            add(name, mode, data, owner)
    return buf.getvalue()


class Layout:
    """An OCI image layout folder: blobs by sha256, index.json, oci-layout."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, media_type, data, **extra):
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.root, "blobs", "sha256", digest)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return dict(mediaType=media_type, digest="sha256:" + digest, size=len(data), **extra)

    def json_blob(self, media_type, value, **extra):
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return self.blob(media_type, data, **extra)


def main(argv):
    if len(argv) < 6:
        sys.exit(__doc__)
    root, tag, version, ca_bundle = argv[1:5]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    labels = {
        "org.opencontainers.image.title": "modelbake",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    out = Layout(root)
    manifests = []
    for spec in argv[5:]:
        arch, binary = spec.split("=", 1)
        tar = layer(binary, ca_bundle, epoch)
        diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
        gz = gzip.compress(tar, compresslevel=9, mtime=0)
        layer_desc = out.blob("application/vnd.oci.image.layer.v1.tar+gzip", gz)
        config = {
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": {
                "User": f"{UID}:{UID}",
                "Entrypoint": ["/usr/local/bin/modelbake"],
                "Cmd": ["--help"],
                "Env": [
                    "PATH=/usr/local/bin",
                    "HOME=/home/modelbake",
                    "TMPDIR=/tmp",
                    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                ],
                "WorkingDir": "/home/modelbake",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "scripts/dist"}],
        }
        config_desc = out.json_blob("application/vnd.oci.image.config.v1+json", config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
            "annotations": labels,
        }
        manifests.append(
            out.json_blob(
                manifest["mediaType"],
                manifest,
                platform={"architecture": arch, "os": "linux"},
            )
        )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
        "annotations": labels,
    }
    top = out.json_blob(
        index["mediaType"],
        index,
        annotations={"org.opencontainers.image.ref.name": tag},
    )
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": index["mediaType"], "manifests": [top]}, f)
    print(top["digest"])


if __name__ == "__main__":
    main(sys.argv)
