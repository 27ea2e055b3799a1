package filelock

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// publishTmpfile publishes with an unnamed file (O_TMPFILE) linked in as
// name: one open, one write and one link, and a crash leaves nothing. It
// returns errTryNext when the filesystem has no O_TMPFILE, or when this
// process may not link it the way how asks (AT_EMPTY_PATH needs
// CAP_DAC_READ_SEARCH; /proc/self/fd needs /proc).
func (l *Locker) publishTmpfile(name string, data []byte, how int32) (int, error) {
	fd, err := unix.Openat(l.dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, l.fileMode())
	switch {
	case err == nil:
	case l.dirGone():
		return -1, unix.ENOENT
	case err == unix.EOPNOTSUPP || err == unix.EISDIR || err == unix.EINVAL:
		return -1, errTryNext
	default:
		return -1, err
	}
	if err := l.newFile(fd, data); err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	if how == viaTmpfile {
		err = unix.Linkat(fd, "", l.dirfd, name, unix.AT_EMPTY_PATH)
	} else {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), l.dirfd, name, unix.AT_SYMLINK_FOLLOW)
	}
	switch {
	case err == nil:
		return fd, nil
	case err == unix.EEXIST:
	case l.dirGone():
		err = unix.ENOENT
	case err == unix.ENOENT || err == unix.EPERM:
		// No CAP_DAC_READ_SEARCH for AT_EMPTY_PATH, or no /proc.
		err = errTryNext
	}
	_ = unix.Close(fd)
	return -1, err
}

// dirGone reports whether the lock directory was removed since New.
func (l *Locker) dirGone() bool {
	var st unix.Stat_t
	return unix.Fstat(l.dirfd, &st) == nil && st.Nlink == 0
}

// renameNoReplace renames from to to in dirfd unless to exists (EEXIST).
func renameNoReplace(dirfd int, from, to string) error {
	return unix.Renameat2(dirfd, from, dirfd, to, unix.RENAME_NOREPLACE)
}
