//go:build linux || darwin

package filelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Modes of what New creates. The file modes are set explicitly after
// creation, so a umask cannot take the group's access away in a shared
// directory.
const (
	privateDirMode  = 0o700
	privateFileMode = 0o600
	sharedDirMode   = 0o770 | unix.S_ISGID // files inherit the directory's group
	sharedFileMode  = 0o660
)

func (l *Locker) fileMode() uint32 {
	if l.cfg.shared {
		return sharedFileMode
	}
	return privateFileMode
}

// openDir opens the lock directory, creating it if it is missing, and
// checks that it can be used safely. The descriptor it returns is the
// directory every later operation works in (openat, unlinkat, linkat), so
// whatever replaces the path afterwards (a symlink swapped in, the
// directory renamed away) cannot redirect them; atPath then stops the
// Locker from granting or renewing locks there. The last component of the
// path is never followed: a symlink there is refused, since whoever owns
// the symlink could point it elsewhere.
func (l *Locker) openDir() (int, error) {
	fd, err := openDirNoFollow(l.dir)
	if err == unix.ENOENT {
		if err := l.makeDir(); err != nil {
			return -1, err
		}
		fd, err = openDirNoFollow(l.dir)
	}
	switch {
	case err == unix.ELOOP || err == unix.ENOTDIR:
		if st, lerr := os.Lstat(l.dir); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
			return -1, fmt.Errorf("%w: %s is a symlink, which is never followed (whoever owns it could point it elsewhere): "+
				"use the directory it points to, or remove it", ErrUnsafeDir, l.dir)
		}
		return -1, fmt.Errorf("filelock: lock directory %s is not a directory", l.dir)
	case err != nil:
		return -1, pathError("open", l.dir, err)
	}
	if err := l.checkDir(fd); err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func openDirNoFollow(dir string) (int, error) {
	for {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// checkDir checks the open lock directory: who may change it, its
// filesystem, and that this process may create files in it.
func (l *Locker) checkDir(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return pathError("fstat", l.dir, err)
	}
	if err := l.checkDirSafe(&st); err != nil {
		return err
	}
	if l.cfg.shared && uint32(st.Mode)&unix.S_ISGID == 0 {
		return fmt.Errorf("%w: %s has no setgid bit, so lock files made in it would get their creator's group instead of the directory's, "+
			"and other members could not open them: chmod g+s %s", ErrUnsafeDir, l.dir, l.dir)
	}
	if fsName, err := networkFS(fd); err != nil {
		return pathError("statfs", l.dir, err)
	} else if fsName != "" {
		return fmt.Errorf("filelock: lock directory %s is on %s; flock there does not exclude other hosts, use the Redis engine", l.dir, fsName)
	}
	if err := unix.Faccessat(fd, ".", unix.W_OK|unix.X_OK, 0); err != nil {
		return pathError("access", l.dir, err)
	}
	return nil
}

// makeDir creates the lock directory with its mode, setgid included for a
// shared one; the umask and mkdir may take bits away, so they are set
// again on the new directory.
func (l *Locker) makeDir() error {
	mode := uint32(privateDirMode)
	if l.cfg.shared {
		mode = sharedDirMode
	}
	if err := unix.Mkdir(l.dir, mode&0o777); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil // made by someone else just now: checked like any other
		}
		return fmt.Errorf("filelock: create lock directory: %w", &os.PathError{Op: "mkdir", Path: l.dir, Err: err})
	}
	fd, err := openDirNoFollow(l.dir)
	if err != nil {
		return nil // replaced at once: openDir finds out what is there
	}
	defer unix.Close(fd)
	if l.cfg.shared {
		// A new directory gets this process's effective group, the one a
		// shared directory is checked against.
		if err := unix.Fchown(fd, -1, int(l.gid)); err != nil {
			return pathError("chown", l.dir, err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return pathError("chmod", l.dir, err)
	}
	return nil
}

// checkDirSafe refuses a directory in which anyone but this user (or,
// with WithSharedGroup, the members of this process's effective group)
// could remove, replace or forge lock files. A sticky bit does not make a
// directory writable by others safe: whoever creates a key's file first
// owns it, and may fill it with a lock that never ends.
func (l *Locker) checkDirSafe(st *unix.Stat_t) error {
	mode := uint32(st.Mode)
	perm := fmt.Sprintf("%04o", mode&0o7777)
	switch {
	case l.cfg.shared:
		return l.checkSharedDir(st, perm)
	case st.Uid != l.uid:
		return fmt.Errorf("%w: %s is owned by uid %d, not by this process's user (uid %d), who could delete or forge its locks; "+
			"someone else may have made it first: remove it if nothing of theirs uses it, or use another directory",
			ErrUnsafeDir, l.dir, st.Uid, l.uid)
	case mode&0o002 != 0:
		return fmt.Errorf("%w: %s is writable by every user (mode %s), who could plant or delete its lock files: chmod 0700 %s",
			ErrUnsafeDir, l.dir, perm, l.dir)
	case mode&0o020 != 0:
		return fmt.Errorf("%w: %s is writable by its group (mode %s), whose members could plant or delete its lock files: chmod 0700 %s, "+
			"or, if the group shares it on purpose, use WithSharedGroup",
			ErrUnsafeDir, l.dir, perm, l.dir)
	}
	return nil
}

// checkSharedDir is checkDirSafe for WithSharedGroup: the directory must
// belong to this process's effective group, the group trusted with the
// locks, and be writable by nobody outside it.
func (l *Locker) checkSharedDir(st *unix.Stat_t, perm string) error {
	mode := uint32(st.Mode)
	switch {
	case mode&0o002 != 0:
		return fmt.Errorf("%w: %s is writable by every user (mode %s), not only by its group: chmod 2770 %s",
			ErrUnsafeDir, l.dir, perm, l.dir)
	case st.Gid != l.gid:
		return fmt.Errorf("%w: %s belongs to group %d, not to this process's effective group %d, the group trusted with a shared directory: "+
			"chgrp %d %s if that group shares it, or run this process with the directory's group (systemd Group=, sg, newgrp)",
			ErrUnsafeDir, l.dir, st.Gid, l.gid, l.gid, l.dir)
	}
	return nil
}
