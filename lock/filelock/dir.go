//go:build linux || darwin

package filelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Modes of what New creates. The file modes are set explicitly after
// creation, so a umask cannot take the group's access away in a shared
// directory.
const (
	privateDirMode  = 0o700
	privateFileMode = 0o600
	sharedDirMode   = 0o770 | fs.ModeSetgid // files inherit the directory's group
	sharedFileMode  = 0o660
)

func (l *Locker) fileMode() uint32 {
	if l.cfg.shared {
		return sharedFileMode
	}
	return privateFileMode
}

// prepareDir creates the lock directory if it is missing and checks that
// it can be used safely.
func (l *Locker) prepareDir() error {
	st, err := os.Stat(l.dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := l.makeDir(); err != nil {
			return err
		}
		st, err = os.Stat(l.dir)
	}
	if err != nil {
		return fmt.Errorf("filelock: lock directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("filelock: lock directory %s is not a directory", l.dir)
	}
	if err := l.checkDirSafe(st); err != nil {
		return err
	}
	if fs, err := networkFS(l.dir); err != nil {
		return pathError("statfs", l.dir, err)
	} else if fs != "" {
		return fmt.Errorf("filelock: lock directory %s is on %s; flock there does not exclude other hosts, use the Redis engine", l.dir, fs)
	}
	if err := unix.Access(l.dir, unix.W_OK|unix.X_OK); err != nil {
		return pathError("access", l.dir, err)
	}
	return nil
}

func (l *Locker) makeDir() error {
	mode := fs.FileMode(privateDirMode)
	if l.cfg.shared {
		mode = sharedDirMode
	}
	if err := os.Mkdir(l.dir, mode.Perm()); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made by someone else just now: checked like any other
		}
		return fmt.Errorf("filelock: create lock directory: %w", err)
	}
	// Mkdir's mode passes through the umask and drops setgid.
	if err := os.Chmod(l.dir, mode); err != nil {
		return fmt.Errorf("filelock: set lock directory mode: %w", err)
	}
	return nil
}

// checkDirSafe refuses a directory that lets anyone but this user (or,
// with WithSharedGroup, its group) remove or replace lock files.
func (l *Locker) checkDirSafe(st fs.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("filelock: lock directory %s: no owner information", l.dir)
	}
	mode := st.Mode()
	perm := fmt.Sprintf("%04o", uint32(mode.Perm())|specialBits(mode))
	sticky := mode&fs.ModeSticky != 0
	switch {
	case sys.Uid != l.uid && !l.cfg.shared:
		return fmt.Errorf("%w: %s is owned by uid %d, not by this process's user (uid %d), who could delete or forge its locks: "+
			"use a directory of your own (the default is one per user), or, for a directory a group of users shares on purpose, WithSharedGroup",
			ErrUnsafeDir, l.dir, sys.Uid, l.uid)
	case mode&0o002 != 0 && !sticky:
		return fmt.Errorf("%w: %s is writable by every user (mode %s) and has no sticky bit, so anyone could delete a live lock file: chmod 0700 %s",
			ErrUnsafeDir, l.dir, perm, l.dir)
	case mode&0o020 != 0 && !sticky && !l.cfg.shared:
		return fmt.Errorf("%w: %s is writable by its group (mode %s), whose members could delete a live lock file: chmod 0700 %s, "+
			"or, if the group shares it on purpose, use WithSharedGroup",
			ErrUnsafeDir, l.dir, perm, l.dir)
	}
	return nil
}

// specialBits renders the setuid, setgid and sticky bits as chmod digits.
func specialBits(m fs.FileMode) uint32 {
	var b uint32
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}
