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
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockSuffix  = ".lock"
	openFlags   = unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOFOLLOW
	readBufSize = 2048
)

// fileID is the md5 of a key. Its name is the spec's lock file name: the
// md5 in hex + ".lock". The hot path keys the open-file cache by the ID and
// builds the name only to open a file or report an error.
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

// entry is an open lock file kept for reuse. mu orders the goroutines of
// this process; flock orders processes.
type entry struct {
	mu  sync.Mutex
	fd  int // -1 once closed
	buf []byte
	out []byte
	// v is the view of the operation holding mu, kept here so the hot
	// path does not allocate one.
	v view
}

// view is what an operation sees of a lock file under its flock.
type view struct {
	dir     string
	id      fileID
	exists  bool
	created bool // this call created the file, so an empty one is ours
	content []byte
	// out is where an operation builds the record it wants written.
	out     record
	fd      int
	info    fileInfo
	statted bool
}

func (v *view) name() string { return v.id.name() }

func (v *view) path() string { return filepath.Join(v.dir, v.id.name()) }

// errRemoved says the open file was unlinked since it was opened; the
// operation must open the path again.
var errRemoved = errors.New("filelock: lock file removed")

// stat returns the file's metadata, reading it at most once. Operations
// call it only when their outcome depends on it, to keep the hot path short.
func (v *view) stat() (fileInfo, error) {
	if !v.statted {
		info, err := fstat(v.fd)
		if err != nil {
			return fileInfo{}, pathError("fstat", v.path(), err)
		}
		v.info, v.statted = info, true
	}
	return v.info, nil
}

// live returns errRemoved when the file is no longer at its path. Anything
// that takes over or extends a lock must check, or it could act on a file
// that cleanup, an operator or another implementation deleted.
func (v *view) live() error {
	info, err := v.stat()
	if err == nil && info.nlink == 0 {
		return errRemoved
	}
	return err
}

func pathError(op, path string, err error) error {
	return fmt.Errorf("filelock: %w", &os.PathError{Op: op, Path: path, Err: err})
}

// lookup returns the open entry for name, opening (and with create,
// creating) the file if needed. It returns a nil entry when create is false
// and no file exists.
func (l *Locker) lookup(id fileID, create bool) (*entry, bool, error) {
	l.mu.Lock()
	e := l.open[id]
	l.mu.Unlock()
	if e != nil {
		return e, false, nil
	}
	path := filepath.Join(l.dir, id.name())
	fd, created, err := openLockFile(path, create)
	if err == unix.ENOENT && !create {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, pathError("open", path, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if other := l.open[id]; other != nil {
		_ = unix.Close(fd)
		return other, created, nil
	}
	if len(l.open) >= l.cfg.maxOpen {
		l.evictLocked()
	}
	e = &entry{fd: fd, buf: make([]byte, readBufSize)}
	l.open[id] = e
	return e, created, nil
}

// openLockFile opens path, and with create makes it if it is missing.
// created says this call made the file.
func openLockFile(path string, create bool) (fd int, created bool, err error) {
	for {
		fd, err = unix.Open(path, openFlags, 0)
		if err != unix.ENOENT || !create {
			return fd, false, err
		}
		fd, err = unix.Open(path, openFlags|unix.O_CREAT|unix.O_EXCL, 0o644)
		if err != unix.EEXIST {
			return fd, err == nil, err
		}
		// Someone else made it just now; it may even be gone again if a
		// cleanup removed it meanwhile, so start over.
	}
}

// evictLocked closes one idle entry. l.mu must be held.
func (l *Locker) evictLocked() {
	for id, e := range l.open {
		if !e.mu.TryLock() {
			continue
		}
		_ = unix.Close(e.fd)
		e.fd = -1
		delete(l.open, id)
		e.mu.Unlock()
		return
	}
}

// drop forgets an entry whose file was removed. e.mu must be held.
func (l *Locker) drop(id fileID, e *entry) {
	l.mu.Lock()
	if l.open[id] == e {
		delete(l.open, id)
	}
	l.mu.Unlock()
	_ = unix.Close(e.fd)
	e.fd = -1
}

// update runs fn on key's lock file under an exclusive flock and writes the
// record fn returns, if any, in place. Without create a missing file is
// shown to fn as a view with exists false.
func (l *Locker) update(ctx context.Context, key string, create bool, fn func(v *view) (*record, error)) error {
	id := idOf(key)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, created, err := l.lookup(id, create)
		if err != nil {
			return err
		}
		if e == nil {
			_, err := fn(&view{dir: l.dir, id: id})
			return err
		}
		done, err := l.updateEntry(ctx, id, e, created, fn)
		if done {
			return err
		}
	}
}

// updateEntry is one attempt of update. done is false when the file was
// removed under us and the caller must open it again.
func (l *Locker) updateEntry(ctx context.Context, id fileID, e *entry, created bool, fn func(v *view) (*record, error)) (done bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd < 0 {
		return false, nil
	}
	if err := flock(ctx, e.fd, unix.LOCK_EX); err != nil {
		return true, pathError("flock", filepath.Join(l.dir, id.name()), err)
	}
	defer func() { _ = tryFlock(e.fd, unix.LOCK_UN) }()
	content, err := readAll(e.fd, &e.buf)
	if err != nil {
		return true, pathError("read", filepath.Join(l.dir, id.name()), err)
	}
	e.v = view{dir: l.dir, id: id, exists: true, created: created, content: content, fd: e.fd}
	rec, err := fn(&e.v)
	if err == errRemoved {
		l.drop(id, e)
		return false, nil
	}
	if rec == nil || err != nil {
		return true, err
	}
	e.out = encodePadded(e.out[:0], rec, len(content))
	if err := writeAll(e.fd, e.out); err != nil {
		return true, pathError("write", filepath.Join(l.dir, id.name()), err)
	}
	return true, nil
}

// encodePadded encodes rec and pads it with spaces to at least size bytes,
// so a shorter record overwrites a longer one without a truncate and the
// file stays valid JSON.
func encodePadded(b []byte, rec *record, size int) []byte {
	b = rec.appendJSON(b)
	for len(b)+1 < size {
		b = append(b, ' ')
	}
	return append(b, '\n')
}

func readAll(fd int, buf *[]byte) ([]byte, error) {
	for {
		n, err := unix.Pread(fd, *buf, 0)
		if err != nil {
			return nil, err
		}
		if n < len(*buf) {
			return (*buf)[:n], nil
		}
		*buf = make([]byte, 2*len(*buf))
	}
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
