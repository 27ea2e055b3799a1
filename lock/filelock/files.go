//go:build linux || darwin

package filelock

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockSuffix = ".lock"
	// O_NONBLOCK keeps an open of a FIFO planted under a lock file's name
	// from hanging; on a regular file it changes nothing.
	openFlags = unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	// maxRecordSize bounds what is read of a lock file. A record is a few
	// hundred bytes (a key is at most lock.MaxKeyLen); a larger file is not
	// one and counts as corrupt.
	maxRecordSize = 16 << 10
)

// fileID is the md5 of a key. Its name is the spec's lock file name: the
// md5 in hex + ".lock".
type fileID [md5.Size]byte

func idOf(key string) fileID { return md5.Sum([]byte(key)) }

func (id fileID) name() string { return hex.EncodeToString(id[:]) + lockSuffix }

func isLockFile(name string) bool {
	if len(name) != 2*md5.Size+len(lockSuffix) || filepath.Ext(name) != lockSuffix {
		return false
	}
	_, err := hex.DecodeString(name[:2*md5.Size])
	return err == nil
}

// scratch is one operation's working memory, pooled so the hot path does
// not allocate it.
type scratch struct {
	buf []byte // a lock file's content: maxRecordSize+1 bytes, to see an oversized file
	out []byte // the record to write
	v   view
}

func (l *Locker) getScratch() *scratch {
	if s, ok := l.scratch.Get().(*scratch); ok {
		return s
	}
	return &scratch{buf: make([]byte, maxRecordSize+1)}
}

// view is what an operation sees of a lock file under its flock.
type view struct {
	dir     string
	id      fileID
	exists  bool
	created bool // this call created the file, so an empty one is ours
	// content is the file's bytes; nil for an oversized file.
	content   []byte
	oversized bool
	info      fileInfo
	// out is where an operation builds the record it wants written.
	out record
}

func (v *view) name() string { return v.id.name() }

// parse returns the file's record; ok is false when it holds none this
// engine can read: empty, half written, corrupt or oversized.
func (v *view) parse() (record, bool) {
	if v.oversized {
		return record{}, false
	}
	return parseRecord(v.content)
}

func pathError(op, path string, err error) error {
	return fmt.Errorf("filelock: %w", &os.PathError{Op: op, Path: path, Err: err})
}

// notLockFileError is an ErrNotLockFile with its details.
type notLockFileError struct {
	path string
	what string // what is there instead, e.g. "a symlink"
}

func (e *notLockFileError) Error() string {
	return "filelock: " + e.path + " is " + e.what + ", not a lock file: remove it"
}

func (e *notLockFileError) Is(target error) bool { return target == ErrNotLockFile }

func notLockFile(path, what string) error { return &notLockFileError{path: path, what: what} }

// Internal outcomes of openLocked that are not failures.
var (
	// errMissing: there is no file at the path.
	errMissing = errors.New("filelock: no lock file")
	// errRemoved: the file was unlinked between open and flock; open the
	// path again.
	errRemoved = errors.New("filelock: lock file removed")
)

// locked is a lock file open under a flock.
type locked struct {
	fd      int
	info    fileInfo
	created bool
}

// close drops the flock and the descriptor. The explicit unlock matters:
// a child process forked meanwhile may share the open file description
// until it execs, and closing alone would leave the flock with it.
func (f locked) close() {
	_ = tryFlock(f.fd, unix.LOCK_UN)
	_ = unix.Close(f.fd)
}

// openLocked opens the lock file at path (creating it if create is set and
// it is missing), takes a flock of kind how, and checks that it is a lock
// file still at its path. Besides real failures it returns errMissing
// (only without create: with it, a missing path means a missing directory,
// a real failure), errRemoved or an error wrapping ErrNotLockFile.
func (l *Locker) openLocked(ctx context.Context, path string, create bool, how int) (locked, error) {
	fd, created, err := l.openLockFile(path, create)
	switch {
	case err == unix.ENOENT && !create:
		return locked{}, errMissing
	case err == unix.ELOOP:
		return locked{}, notLockFile(path, "a symlink")
	case err == unix.EISDIR:
		return locked{}, notLockFile(path, "a directory")
	case err == unix.ENXIO || err == unix.EOPNOTSUPP:
		return locked{}, notLockFile(path, "a socket")
	case err != nil:
		return locked{}, pathError("open", path, err)
	}
	f := locked{fd: fd, created: created}
	if err := flock(ctx, fd, how); err != nil {
		_ = unix.Close(fd)
		return locked{}, pathError("flock", path, err)
	}
	if f.info, err = fstat(fd); err != nil {
		f.close()
		return locked{}, pathError("fstat", path, err)
	}
	if f.info.nlink == 0 {
		f.close()
		return locked{}, errRemoved
	}
	if what := l.strange(f.info); what != "" {
		f.close()
		return locked{}, notLockFile(path, what)
	}
	return f, nil
}

// strange says what is wrong with an open directory entry named like a
// lock file, or "" when it is a lock file this Locker may use.
func (l *Locker) strange(info fileInfo) string {
	switch {
	case !info.regular:
		return info.kind()
	case info.nlink > 1:
		return fmt.Sprintf("a file with %d hard links", info.nlink)
	case !l.cfg.shared && info.uid != l.uid:
		return fmt.Sprintf("owned by uid %d, not by this process's user (uid %d)", info.uid, l.uid)
	}
	return ""
}

// openLockFile opens path, and with create makes it if it is missing.
// created says this call made the file.
func (l *Locker) openLockFile(path string, create bool) (fd int, created bool, err error) {
	for {
		fd, err = unix.Open(path, openFlags, 0)
		if err != unix.ENOENT || !create {
			return fd, false, err
		}
		fd, err = unix.Open(path, openFlags|unix.O_CREAT|unix.O_EXCL, l.fileMode())
		if err == nil && l.cfg.shared {
			// The umask may have taken the group's write access.
			err = unix.Fchmod(fd, l.fileMode())
			if err != nil {
				_ = unix.Close(fd)
				_ = unix.Unlink(path)
			}
		}
		if err == nil {
			return fd, true, nil
		}
		if err != unix.EEXIST {
			return fd, false, err
		}
		// Someone else made it just now; it may even be gone again if a
		// cleanup removed it meanwhile, so start over.
	}
}

// readRecord reads the lock file's content into buf in one pread (a
// regular file reads short only at its end). oversized is true, and
// content nil, when the file holds more than maxRecordSize bytes.
func readRecord(fd int, buf []byte) (content []byte, oversized bool, err error) {
	n, err := unix.Pread(fd, buf, 0)
	switch {
	case err != nil:
		return nil, false, err
	case n == len(buf):
		return nil, true, nil
	}
	return buf[:n], false, nil
}

// update runs fn on key's lock file under an exclusive flock and writes the
// record fn returns, if any, in place. Without create a missing file is
// shown to fn as a view with exists false. Every call opens the file anew:
// a descriptor kept across calls could outlive the file at its path.
func (l *Locker) update(ctx context.Context, key string, create bool, fn func(v *view) (*record, error)) error {
	id := idOf(key)
	path := filepath.Join(l.dir, id.name())
	s := l.getScratch()
	defer l.scratch.Put(s)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := l.openLocked(ctx, path, create, unix.LOCK_EX)
		switch {
		case err == errMissing:
			_, err := fn(&view{dir: l.dir, id: id})
			return err
		case err == errRemoved:
			continue
		case err != nil:
			return err
		}
		err = l.updateLocked(f, path, id, s, fn)
		f.close()
		return err
	}
}

// updateLocked is update's work on a file it holds under flock.
func (l *Locker) updateLocked(f locked, path string, id fileID, s *scratch, fn func(v *view) (*record, error)) error {
	content, oversized, err := readRecord(f.fd, s.buf)
	if err != nil {
		return pathError("read", path, err)
	}
	s.v = view{dir: l.dir, id: id, exists: true, created: f.created, content: content, oversized: oversized, info: f.info}
	rec, err := fn(&s.v)
	if rec == nil || err != nil {
		return err
	}
	// A shorter record is padded over a longer one instead of truncating
	// the file, which keeps the write to one pwrite; an oversized file is
	// cut down once.
	s.out = encodePadded(s.out[:0], rec, len(content))
	if err := writeAll(f.fd, s.out); err != nil {
		return pathError("write", path, err)
	}
	if oversized {
		if err := unix.Ftruncate(f.fd, int64(len(s.out))); err != nil {
			return pathError("truncate", path, err)
		}
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	var off int64
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}

// flock takes a flock without blocking the thread, polling until ctx ends:
// other holders keep it for microseconds, and a stuck outside holder must
// not hang the caller.
func flock(ctx context.Context, fd, how int) error {
	pause := 5 * time.Microsecond
	for {
		err := tryFlock(fd, how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}
