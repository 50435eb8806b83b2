#!/usr/bin/env python3
"""mkimage.py — pack files into a container image as a docker-archive tarball.

Owns nothing but its output file. No daemon, no registry, standard library only.
The result loads with `ctr -n k8s.io images import IMAGE.tar` (see
load-image.sh) or `docker load -i IMAGE.tar`.

Each --rootfs DIR becomes one layer (in the order given); --file, --dir and
--base-files entries go into one more layer on top. Output is reproducible:
entries are sorted, timestamps are SOURCE_DATE_EPOCH (default 0) and files are
owned by --owner (default 0:0) unless --keep-owner is given.

Examples:
  mkimage.py --tag registry.k8s.io/pause:3.10 --rootfs rootfs/ \\
      --entrypoint /pause --user 65535:65535 -o pause.tar
  mkimage.py --tag starling/broker:dev --base-files \\
      --file target/release/starling-broker:/usr/local/bin/starling-broker:0755 \\
      --entrypoint '["/usr/local/bin/starling-broker"]' --cmd '--config /etc/starling/broker.toml' \\
      --user 65532:65532 --env RUST_LOG=info --workdir / --expose 1883 -o broker.tar
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import shlex
import stat
import sys
import tarfile
import tempfile

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

BASE_PASSWD = """root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
"""
BASE_GROUP = """root:x:0:
nobody:x:65534:
nonroot:x:65532:
"""


def parse_argv_list(value):
    """A JSON array ('["/bin/x", "-v"]') or a shell-words string ('/bin/x -v')."""
    value = value.strip()
    if value.startswith("["):
        parsed = json.loads(value)
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise argparse.ArgumentTypeError("expected a JSON array of strings")
        return parsed
    return shlex.split(value)


def parse_kv(value):
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return value


def parse_owner(value):
    try:
        uid, gid = value.split(":", 1) if ":" in value else (value, value)
        return int(uid), int(gid)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected UID[:GID], got {value!r}")


def clean_dest(path):
    path = os.path.normpath("/" + path).lstrip("/")
    if not path or path == ".":
        raise ValueError("destination may not be /")
    return path


class Layer:
    """Writes one uncompressed layer tar to a temporary file."""

    def __init__(self, owner, keep_owner):
        self.file = tempfile.TemporaryFile()
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.PAX_FORMAT)
        self.owner = owner
        self.keep_owner = keep_owner
        self.seen = set()

    def _info(self, name, kind, mode, st=None):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = EPOCH
        if st is not None and self.keep_owner:
            info.uid, info.gid = st.st_uid, st.st_gid
        else:
            info.uid, info.gid = self.owner
        info.uname = info.gname = ""
        return info

    def add_parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.seen:
                self.seen.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, 0o755))

    def add_dir(self, name, mode=0o755, st=None):
        self.add_parents(name)
        if name in self.seen:
            return
        self.seen.add(name)
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, st))

    def add_bytes(self, name, data, mode=0o644):
        self.add_parents(name)
        self.seen.add(name)
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def add_path(self, src, name, mode=None):
        """Add a file, symlink or directory tree from the host at name."""
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            self.add_dir(name, stat.S_IMODE(st.st_mode) if mode is None else mode, st)
            for entry in sorted(os.listdir(src)):
                self.add_path(os.path.join(src, entry), f"{name}/{entry}")
            return
        self.add_parents(name)
        self.seen.add(name)
        if stat.S_ISLNK(st.st_mode):
            info = self._info(name, tarfile.SYMTYPE, 0o777, st)
            info.linkname = os.readlink(src)
            self.tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            info = self._info(name, tarfile.REGTYPE, stat.S_IMODE(st.st_mode) if mode is None else mode, st)
            info.size = st.st_size
            with open(src, "rb") as f:
                self.tar.addfile(info, f)
        else:
            print(f"mkimage: skipping special file {src}", file=sys.stderr)

    def add_rootfs(self, root):
        for entry in sorted(os.listdir(root)):
            self.add_path(os.path.join(root, entry), entry)

    def finish(self):
        self.tar.close()
        self.file.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: self.file.read(1 << 20), b""):
            digest.update(chunk)
        size = self.file.tell()
        self.file.seek(0)
        return digest.hexdigest(), size


def add_member(out, name, data=None, fileobj=None, size=None):
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.mode = 0o644
    if data is not None:
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    else:
        info.size = size
        out.addfile(info, fileobj)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Pack files into a docker-archive image tarball.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:" + __doc__.split("Examples:", 1)[1],
    )
    p.add_argument("--tag", action="append", required=True, help="NAME:TAG, repeatable")
    p.add_argument("--rootfs", action="append", default=[], metavar="DIR", help="directory tree packed as one layer, repeatable")
    p.add_argument("--file", action="append", default=[], metavar="SRC:DEST[:MODE]", help="host file or dir at DEST in the top layer, octal MODE")
    p.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE]", help="empty directory in the top layer (e.g. /tmp:1777)")
    p.add_argument("--base-files", action="store_true", help="add /etc/passwd and /etc/group (root, nobody, nonroot=65532) and /tmp (1777)")
    p.add_argument("--entrypoint", type=parse_argv_list, help="JSON array or shell words")
    p.add_argument("--cmd", type=parse_argv_list, help="JSON array or shell words")
    p.add_argument("--user", help="UID[:GID] or name")
    p.add_argument("--env", action="append", default=[], type=parse_kv, metavar="K=V")
    p.add_argument("--workdir", help="working directory")
    p.add_argument("--label", action="append", default=[], type=parse_kv, metavar="K=V")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    p.add_argument("--stop-signal")
    p.add_argument("--owner", type=parse_owner, default=(0, 0), metavar="UID[:GID]", help="owner of packed files (default 0:0)")
    p.add_argument("--keep-owner", action="store_true", help="keep the owners files have on the host")
    p.add_argument("--arch", default="amd64")
    p.add_argument("--os", default="linux")
    p.add_argument("-o", "--output", required=True, help="output .tar")
    a = p.parse_args(argv)

    for tag in a.tag:
        last = tag.rsplit("/", 1)[-1]
        if ":" not in last or "@" in tag:
            p.error(f"--tag {tag!r}: expected NAME:TAG")

    layers = []
    for root in a.rootfs:
        if not os.path.isdir(root):
            p.error(f"--rootfs {root!r} is not a directory")
        layer = Layer(a.owner, a.keep_owner)
        layer.add_rootfs(root)
        layers.append(layer)

    if a.file or a.dir or a.base_files:
        layer = Layer(a.owner, a.keep_owner)
        if a.base_files:
            layer.add_bytes("etc/passwd", BASE_PASSWD.encode())
            layer.add_bytes("etc/group", BASE_GROUP.encode())
            layer.add_dir("tmp", 0o1777)
            layer.add_dir("home/nonroot", 0o755)
        for spec in a.dir:
            dest, _, mode = spec.partition(":")
            layer.add_dir(clean_dest(dest), int(mode, 8) if mode else 0o755)
        for spec in a.file:
            parts = spec.split(":")
            if len(parts) not in (2, 3):
                p.error(f"--file {spec!r}: expected SRC:DEST[:MODE]")
            src, dest = parts[0], clean_dest(parts[1])
            if not os.path.lexists(src):
                p.error(f"--file {spec!r}: {src} does not exist")
            layer.add_path(src, dest, int(parts[2], 8) if len(parts) == 3 else None)
        layers.append(layer)

    if not layers:
        p.error("nothing to pack: give --rootfs, --file, --dir or --base-files")

    finished = [(layer, *layer.finish()) for layer in layers]
    diff_ids = [f"sha256:{h}" for _, h, _ in finished]

    config = {}
    if a.entrypoint is not None:
        config["Entrypoint"] = a.entrypoint
    if a.cmd is not None:
        config["Cmd"] = a.cmd
    env = list(a.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    config["Env"] = env
    if a.user:
        config["User"] = a.user
    if a.workdir:
        config["WorkingDir"] = a.workdir
    if a.label:
        config["Labels"] = dict(kv.split("=", 1) for kv in a.label)
    if a.expose:
        config["ExposedPorts"] = {(e if "/" in e else f"{e}/tcp"): {} for e in a.expose}
    if a.stop_signal:
        config["StopSignal"] = a.stop_signal

    created = datetime.datetime.fromtimestamp(EPOCH, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    image_config = {
        "architecture": a.arch,
        "os": a.os,
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "mkimage.py"} for _ in layers],
    }
    config_bytes = json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"

    layer_paths = [f"{h}/layer.tar" for _, h, _ in finished]
    manifest = [{"Config": config_name, "RepoTags": a.tag, "Layers": layer_paths}]

    tmp_out = a.output + ".part"
    with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as out:
        for (layer, h, size), path in zip(finished, layer_paths):
            d = tarfile.TarInfo(h)
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            out.addfile(d)
            add_member(out, f"{h}/VERSION", b"1.0")
            add_member(out, path, fileobj=layer.file, size=size)
        add_member(out, config_name, config_bytes)
        add_member(out, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        repos = {}
        for tag in a.tag:
            name, _, t = tag.rpartition(":")
            repos.setdefault(name, {})[t] = finished[-1][1]
        add_member(out, "repositories", json.dumps(repos, separators=(",", ":")).encode())
    os.replace(tmp_out, a.output)
    for layer in layers:
        layer.file.close()
    print(f"mkimage: wrote {a.output} ({', '.join(a.tag)}; {len(layers)} layer(s))", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
