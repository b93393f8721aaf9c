"""The run directory, OUT_DIR/NAME/: every file name a run writes, and the
rules around them. One writer at a time (RunLock), no silent overwrite
(check: a run is continued with resume, replaced with overwrite), no stale
temporaries of killed runs, and log rows after the step a run continues
from dropped (they are replayed). Trainer, train_and_evaluate and the CLI
read every name from here.
"""
import csv
import os
import shutil
import time

try:
    import fcntl
except ImportError:  # Windows: no flock, runs are not locked
    fcntl = None

__all__ = ["RunDir", "RunLock", "RunLockedError", "LOG_COLUMNS"]

LOG_COLUMNS = ["step", "loss", "photometric", "smoothness", "velocity", "lr", "images_per_s"]


class RunDir:
    """OUT_DIR/NAME/ and its files: checkpoint.pt, log.csv, summary.json,
    test-strip.png, curve.csv, previews/step_<N>.png, tensorboard/, train.lock."""

    CHECKPOINT, LOG, SUMMARY = "checkpoint.pt", "log.csv", "summary.json"
    TEST_STRIP, LOCK, CURVE = "test-strip.png", "train.lock", "curve.csv"
    PREVIEWS, TENSORBOARD = "previews", "tensorboard"
    # the files that make a run (check refuses to write over them); pictures
    # and TensorBoard events go with the run (clear) but are not a sign of one
    RUN_FILES = (CHECKPOINT, LOG, SUMMARY)

    def __init__(self, out_dir, name):
        self.path = os.path.join(str(out_dir), str(name))
        self.name = os.path.basename(os.path.normpath(self.path))

    @classmethod
    def of(cls, cfg):
        """The run directory of a TrainConfig."""
        return cls(cfg.out_dir, cfg.name)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def checkpoint(self):
        return self.file(self.CHECKPOINT)

    @property
    def log(self):
        return self.file(self.LOG)

    @property
    def summary(self):
        return self.file(self.SUMMARY)

    @property
    def test_strip(self):
        return self.file(self.TEST_STRIP)

    @property
    def tensorboard(self):
        return self.file(self.TENSORBOARD)

    def preview(self, step):
        return os.path.join(self.path, self.PREVIEWS, f"step_{step:07d}.png")

    def lock(self, log=print):
        """A RunLock on this directory (taken by acquire() or `with`)."""
        return RunLock(self.path, log=log)

    # ------------------------------------------------------------ rules
    def check(self, resume=False, overwrite=False):
        """ValueError when a new run would write over an existing one (its
        checkpoint, log or summary): it is continued with resume, replaced
        with overwrite, never silently."""
        if resume and overwrite:
            raise ValueError(f"--resume continues {self.path}, --overwrite replaces it: give one")
        if resume or overwrite:
            return
        existing = [f for f in self.RUN_FILES if os.path.exists(self.file(f))
                    and (f != self.LOG or _log_has_rows(self.file(f)))]
        if existing:
            raise ValueError(f"run {self.name!r} already exists in {self.path} "
                             f"({', '.join(existing)}): continue it with --resume, start another "
                             f"with --name NEW, or replace it with --overwrite")

    def clear(self):
        """Remove the run's files (checkpoint, log, summary, pictures,
        TensorBoard events) and nothing else; returns what was removed."""
        removed = []
        for f in self.RUN_FILES + (self.TEST_STRIP, self.CURVE):
            if os.path.isfile(self.file(f)):
                os.remove(self.file(f))
                removed.append(f)
        for d in (self.PREVIEWS, self.TENSORBOARD):
            if os.path.isdir(self.file(d)):
                shutil.rmtree(self.file(d))
                removed.append(d + "/")
        return removed

    def clean_stale_temporaries(self):
        """Remove checkpoint.pt.tmp.<pid> (and log.csv.tmp.<pid>) files whose
        process is gone (a kill during a save); returns their paths."""
        removed = []
        if not os.path.isdir(self.path):
            return removed
        for f in sorted(os.listdir(self.path)):
            head, _, pid = f.rpartition(".tmp.")
            if head in (self.CHECKPOINT, self.LOG) and pid.isdigit() and not _pid_alive(int(pid)):
                os.remove(self.file(f))
                removed.append(self.file(f))
        return removed

    def trim_log(self, step, log=print):
        """Drop log.csv rows after `step`, the step the run continues from (a
        kill after logging them and before the next checkpoint: they are
        replayed). A header other than LOG_COLUMNS is refused (ValueError):
        rows under it would be misread."""
        path = self.log
        if not os.path.exists(path):
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        if rows[0] != LOG_COLUMNS:
            raise ValueError(f"{path}: its header is {','.join(rows[0])!r}, not packnet's "
                             f"{','.join(LOG_COLUMNS)!r} (edited, or written by another program "
                             f"or version): move the file aside (the run then starts a new "
                             f"log.csv) or restore its first line; nothing was changed")
        keep = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        if len(keep) == len(rows) - 1:
            return
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + keep)
        os.replace(tmp, path)
        log(f"log.csv: dropped {len(rows) - 1 - len(keep)} row(s) after step {step} "
            f"(logged after the last checkpoint; those steps run again)")

    def holds(self, drew_strip=False):
        """What the directory holds, for a run's last line: previews/ only when
        it has a picture, test-strip.png only when this run drew it."""
        names = [n for n in (self.CHECKPOINT, self.LOG) if os.path.isfile(self.file(n))]
        previews = self.file(self.PREVIEWS)
        if os.path.isdir(previews) and any(f.endswith(".png") for f in os.listdir(previews)):
            names.append(self.PREVIEWS + "/")
        names += [self.TEST_STRIP] if drew_strip else []
        return names + ([self.SUMMARY] if os.path.isfile(self.summary) else [])


def _log_has_rows(path):
    """A log.csv with only its header (a run that failed at its first step)
    holds nothing to lose."""
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip()) > 1
    except OSError:
        return True


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------- run lock
_held = {}  # real path of a run directory -> [lock file descriptor, depth]: this process's


class RunLockedError(ValueError):
    """Another process is training in the run directory."""


class RunLock:
    """One writer per run directory: an exclusive flock on OUT_DIR/NAME/train.lock
    while a process trains in it. The kernel drops a flock when its process
    ends however it ends (exit, exception, SIGKILL), so a lock can never
    outlive its holder; the file holds the holder's pid, for the message a
    second writer gets. A file left by a killed process (its pid inside, no
    flock on it) is taken over with a note. Re-entrant within a process
    (packnet train holds it, Trainer.fit takes it again). Local file systems
    only: flock over NFS depends on the server."""

    def __init__(self, run_dir, log=print):
        self.run_dir, self.log = str(run_dir), log
        self.path = os.path.join(self.run_dir, RunDir.LOCK)
        self._active = False

    def acquire(self):
        """Take the lock (RunLockedError naming the run and the holder's pid when
        another process has it); a no-op when this object already holds it."""
        if self._active:
            return self
        key = os.path.realpath(self.run_dir)
        if key in _held:
            _held[key][1] += 1
        else:
            os.makedirs(self.run_dir, exist_ok=True)
            _held[key] = [self._lock_file(), 1]
        self._key, self._active = key, True
        return self

    def release(self):
        if not self._active:
            return
        self._active = False
        held = _held[self._key]
        held[1] -= 1
        if held[1] == 0:
            del _held[self._key]
            if held[0] is not None:
                try:  # removed while still locked: an opener of the old file sees it is gone
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                os.close(held[0])

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()

    def _lock_file(self):
        if fcntl is None:
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _flock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                name = os.path.basename(os.path.normpath(self.run_dir))
                who = f"process {holder}" if holder else "another process"
                raise RunLockedError(
                    f"run {name!r} in {self.run_dir} is in use: {who} is training it (it holds "
                    f"{self.path}). Wait for it to finish or stop it, or start another run "
                    f"with --name NEW")
            try:
                mine = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                mine = False
            if mine:
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the new one
        previous = _read_pid(fd)
        if previous and previous != os.getpid():
            self.log(f"{self.path}: process {previous} no longer holds this run (it was killed "
                     f"or crashed); its lock is taken over")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _flock(fd, tries=20):
    """Exclusive flock without blocking, retried for half a second (a holder
    that is finishing lets go a moment later)."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i + 1 < tries:
                time.sleep(0.025)
    return False


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
