//go:build linux || darwin

package filelock

import (
	"crypto/rand"
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// How publish makes a new file: the first that works here is kept.
const (
	viaTmpfile  = iota // O_TMPFILE, then linkat with AT_EMPTY_PATH
	viaProcLink        // O_TMPFILE, then linkat through /proc/self/fd
	viaTempName        // a file under a temporary name, renamed without replacing
)

// tempPrefix starts the names of files being published viaTempName. One
// left behind by a crash is removed by Cleanup after the corrupt-file
// grace.
const tempPrefix = ".new-"

// publish makes data the content of a new file name in the lock
// directory, all at once: the file appears under its name with data in
// it, or not at all, so no reader ever sees it empty or half written, and
// a failed write (a full disk) leaves nothing behind. It returns the new
// file open for reading and writing, or EEXIST when name exists.
func (l *Locker) publish(name string, data []byte) (int, error) {
	for {
		how := l.publishVia.Load()
		var fd int
		var err error
		if how == viaTempName {
			fd, err = l.publishRenamed(name, data)
		} else {
			fd, err = l.publishTmpfile(name, data, how)
		}
		if err != errTryNext {
			return fd, err
		}
		l.publishVia.CompareAndSwap(how, how+1)
	}
}

// errTryNext: this way of publishing does not work here.
var errTryNext = errors.New("filelock: try the next way to publish")

// newFile sets a new file's mode, which the umask may have narrowed, and
// writes data into it.
func (l *Locker) newFile(fd int, data []byte) error {
	if l.cfg.shared {
		if err := unix.Fchmod(fd, l.fileMode()); err != nil {
			return err
		}
	}
	return writeAll(fd, data, 0)
}

// publishRenamed publishes through a temporary name, renamed to name
// unless name exists.
func (l *Locker) publishRenamed(name string, data []byte) (int, error) {
	tmp := tempPrefix + strings.ToLower(rand.Text())
	fd, err := l.openat(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, l.fileMode())
	if err != nil {
		return -1, err
	}
	if err = l.newFile(fd, data); err == nil {
		err = renameNoReplace(l.dirfd, tmp, name)
	}
	if err != nil {
		_ = unix.Unlinkat(l.dirfd, tmp, 0)
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// isTempFile reports whether name is one publishRenamed gives a file
// before its rename.
func isTempFile(name string) bool { return strings.HasPrefix(name, tempPrefix) }
