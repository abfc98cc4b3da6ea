"""Files beneath a container's root, read and written as the container would see them, never outside it.

A path is resolved one component at a time from the root's directory fd: a
symlink is followed the way ``chroot`` would (absolute targets from the
container's root, ``..`` never above it), so a link like ``etc/hosts ->
../../bad-path.txt`` lands inside the root, not on the host.  Writes go to a
temporary file in the target's directory and are renamed over it, which
replaces a symlink at the last component instead of writing through it.

Every change is staged first and applied by :meth:`Root.commit`: a setup that
fails half-way (a file Caisson cannot honour) leaves the container's files as
they were.  ``etc/.pve-ignore.<name>`` (Proxmox's convention) makes
``etc/<name>`` read-only to the setup.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_LINKS = 40


class Root:
    """The container's root directory; paths are relative to it ("etc/hosts")."""

    def __init__(self, path: str | os.PathLike = ".", owner: tuple[int, int] | None = None):
        self.path = os.fspath(path)
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.owner = owner  # who owns what is created (the container's root, seen from the host)
        self.pending: dict[str, tuple[str | None, int | None]] = {}  # path -> (text or None to remove, mode)
        self.new_dirs: dict[str, int] = {}  # directories to make before the files, with their mode
        self.new_links: dict[str, str] = {}  # symlinks to make where nothing is, path -> target

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- resolution ------------------------------------------------------------------------
    def _resolve(self, relpath: str, follow_last: bool, create: bool = False) -> tuple[int, str]:
        """(fd of the parent directory, last component) with symlinks resolved inside the root; ``create``
        makes missing directories on the way (``mkdir -p`` in a chroot)."""
        parts = [p for p in relpath.split("/") if p and p != "."]
        if not parts:
            raise OSError(errno.EINVAL, f"bad path '{relpath}'")
        links = 0
        stack: list[int] = [os.dup(self.fd)]
        try:
            while parts:
                part = parts.pop(0)
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                if not parts and not follow_last:
                    return os.dup(stack[-1]), part
                try:
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if not parts:
                        return os.dup(stack[-1]), part
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=stack[-1])
                    if self.owner and os.geteuid() == 0:
                        os.chown(part, *self.owner, dir_fd=stack[-1], follow_symlinks=False)
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, f"'{relpath}': too many symlinks")
                    target = os.readlink(part, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    parts = [p for p in target.split("/") if p and p != "."] + parts
                    continue
                if not parts:
                    return os.dup(stack[-1]), part
                if not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, f"'{relpath}': '{part}' is not a directory")
                stack.append(os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1]))
            raise OSError(errno.EINVAL, f"bad path '{relpath}'")
        finally:
            for fd in stack:
                os.close(fd)

    def _stat(self, relpath: str) -> os.stat_result | None:
        try:
            dir_fd, name = self._resolve(relpath, True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(dir_fd)

    # ---- reading (staged changes included) -------------------------------------------------
    def read(self, relpath: str) -> str | None:
        """The file's text as the container sees it, or None when it is missing or not a file."""
        if relpath in self.pending:
            return self.pending[relpath][0]
        try:
            dir_fd, name = self._resolve(relpath, True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except (FileNotFoundError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ELOOP, errno.EISDIR):
                return None
            raise
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read().decode("utf-8", "surrogateescape")

    def first_line(self, relpath: str) -> str | None:
        text = self.read(relpath)
        return None if text is None else (text.splitlines() or [""])[0]

    def is_file(self, relpath: str) -> bool:
        if relpath in self.pending:
            return self.pending[relpath][0] is not None
        st = self._stat(relpath)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, relpath: str) -> bool:
        st = self._stat(relpath)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_symlink(self, relpath: str) -> bool:
        try:
            dir_fd, name = self._resolve(relpath, False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)

    def readlink(self, relpath: str) -> str | None:
        try:
            dir_fd, name = self._resolve(relpath, False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.readlink(name, dir_fd=dir_fd)
        except OSError:
            return None
        finally:
            os.close(dir_fd)

    def exists(self, relpath: str) -> bool:
        return self.is_file(relpath) or self._stat(relpath) is not None

    def ignored(self, relpath: str) -> bool:
        """Proxmox's ``.pve-ignore.<name>`` beside the file: the setup leaves it alone."""
        head, _, name = relpath.rpartition("/")
        return self.is_file(f"{head}/.pve-ignore.{name}" if head else f".pve-ignore.{name}")

    # ---- staged changes --------------------------------------------------------------------
    def write(self, relpath: str, text: str, mode: int | None = None) -> None:
        """Stage the file's new text (applied by ``commit``), unless the file is ignored."""
        if not self.ignored(relpath):
            self.pending[relpath] = (text, mode)

    def make_dir(self, relpath: str, mode: int = 0o755) -> None:
        if not self.is_dir(relpath):
            self.new_dirs[relpath] = mode

    def symlink(self, target: str, relpath: str) -> None:
        """Stage a symlink, made only if nothing is at ``relpath`` and its directory exists (as ``ln -s``)."""
        head = relpath.rpartition("/")[0]
        if (
            not self.ignored(relpath)
            and not self.exists(relpath)
            and not self.is_symlink(relpath)
            and (not head or self.is_dir(head))
        ):
            self.new_links[relpath] = target

    def remove(self, relpath: str) -> None:
        if not self.ignored(relpath) and self.exists(relpath):
            self.pending[relpath] = (None, None)

    def commit(self) -> list[str]:
        """Apply the staged changes that differ from what is there; the paths changed, in order."""
        changed = []
        pending, self.pending = self.pending, {}
        new_dirs, self.new_dirs = self.new_dirs, {}
        for relpath, mode in new_dirs.items():
            self._mkdirs(relpath, mode)
        new_links, self.new_links = self.new_links, {}
        for relpath, target in new_links.items():
            dir_fd, name = self._resolve(relpath, False, create=True)
            try:
                os.symlink(target, name, dir_fd=dir_fd)
                if self.owner and os.geteuid() == 0:
                    os.chown(name, *self.owner, dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                continue
            finally:
                os.close(dir_fd)
            changed.append(relpath)
        for relpath, (text, mode) in pending.items():
            if text is None:
                self._unlink(relpath)
            elif self.read(relpath) != text or self.is_symlink(relpath):
                self._replace(relpath, text, mode)
            else:
                continue
            changed.append(relpath)
        return changed

    def _mkdirs(self, relpath: str, mode: int = 0o755) -> None:
        dir_fd, name = self._resolve(relpath, True, create=True)
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
            os.chmod(name, mode, dir_fd=dir_fd)  # not the umask's
            if self.owner and os.geteuid() == 0:
                os.chown(name, *self.owner, dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass
        finally:
            os.close(dir_fd)

    def _replace(self, relpath: str, text: str, mode: int | None) -> None:
        dir_fd, name = self._resolve(relpath, False, create=True)
        try:
            try:
                old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            keep = old is not None and stat.S_ISREG(old.st_mode)
            final_mode = mode if mode is not None else stat.S_IMODE(old.st_mode) if keep else 0o644
            owner = (old.st_uid, old.st_gid) if keep else self.owner
            tmp = f".{name}.caisson-new"
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                os.write(fd, text.encode("utf-8", "surrogateescape"))
                if owner and os.geteuid() == 0:
                    os.fchown(fd, *owner)
                os.fchmod(fd, final_mode)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def _unlink(self, relpath: str) -> None:
        dir_fd, name = self._resolve(relpath, False)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)

    def listdir(self, relpath: str) -> list[str]:
        try:
            dir_fd, name = self._resolve(relpath, True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return []
        finally:
            os.close(dir_fd)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)
