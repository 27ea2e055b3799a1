//go:build linux || darwin

package filelock

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockSuffix = ".lock"
	// O_NONBLOCK keeps an open of a FIFO planted under a lock file's name
	// from hanging; on a regular file it changes nothing.
	lockFlags = unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	// scanFlags open files only to read them, as Scan and Cleanup do: a
	// file this process may read but not write is still counted, and
	// flock works on a read-only descriptor.
	scanFlags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	// maxRecordSize bounds what is read of a lock file. A record is a few
	// hundred bytes (a key is at most lock.MaxKeyLen); a larger file is not
	// one and counts as corrupt.
	maxRecordSize = 16 << 10
)

// fileID is the md5 of a key. Its name is the spec's lock file name: the
// md5 in hex + ".lock".
type fileID [md5.Size]byte

func idOf(key string) fileID { return md5.Sum([]byte(key)) }

// fileOf returns key's file id and name. It is not inlined, so that the
// md5 and hex encoding's working memory is not part of the frame of the
// operation that calls it and goes on to call the deep system call paths:
// asynq runs each task on a goroutine of its own, whose stack grows by
// copying when a task's calls go deeper than it.
//
//go:noinline
func fileOf(key string) (fileID, string) {
	id := idOf(key)
	return id, id.name()
}

func (id fileID) name() string { return hex.EncodeToString(id[:]) + lockSuffix }

// isLockFile reports whether name is one this engine gives a lock file:
// 32 lowercase hex digits and ".lock". An uppercase name is no key's.
func isLockFile(name string) bool {
	stem, ok := cutLockSuffix(name)
	return ok && isLowerHex(stem, 2*md5.Size)
}

// looksLikeLockFile reports whether name would be taken for a lock file
// by a reader less strict than isLockFile: hex digits of either case.
func looksLikeLockFile(name string) bool {
	stem, ok := cutLockSuffix(name)
	if !ok || len(stem) != 2*md5.Size {
		return false
	}
	_, err := hex.DecodeString(stem)
	return err == nil
}

func cutLockSuffix(name string) (string, bool) {
	if len(name) < len(lockSuffix) || name[len(name)-len(lockSuffix):] != lockSuffix {
		return "", false
	}
	return name[:len(name)-len(lockSuffix)], true
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
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
	id     fileID
	exists bool
	// content is the file's bytes; nil for an oversized file.
	content   []byte
	oversized bool
	info      fileInfo
	// floorAt is when the floor reading behind a new token began, if one
	// was used (see floorCache).
	floorAt time.Time
	// out is where an operation builds the record it wants written.
	out record
}

func (v *view) name() string { return v.id.name() }

// reset makes v the view of id's missing file. It and found write v in
// place: a view is large, and building one as a value would take that
// much room on the stack of every operation (see parseRecordInto).
func (v *view) reset(id fileID) {
	*v = view{}
	v.id = id
}

// found makes v the view of id's file, which holds content (oversized: more
// than was read) and is described by info.
func (v *view) found(id fileID, content []byte, oversized bool, info *fileInfo) {
	v.reset(id)
	v.exists, v.content, v.oversized, v.info = true, content, oversized, *info
}

// parse returns the file's record; ok is false when it holds none this
// engine can read: empty, half written, corrupt or oversized.
func (v *view) parse() (record, bool) {
	var r record
	ok := v.parseInto(&r)
	return r, ok
}

// parseInto is parse writing into *r (see parseRecordInto).
func (v *view) parseInto(r *record) bool {
	if v.oversized {
		*r = record{}
		return false
	}
	return parseRecordInto(v.content, r)
}

// path is name's path in the lock directory, for errors.
func (l *Locker) path(name string) string { return filepath.Join(l.dir, name) }

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
	fd   int
	info fileInfo
}

// close drops the flock and the descriptor. The explicit unlock matters:
// a child process forked meanwhile may share the open file description
// until it execs, and closing alone would leave the flock with it.
func (f locked) close() {
	_ = tryFlock(f.fd, unix.LOCK_UN)
	_ = unix.Close(f.fd)
}

// openLocked opens the file name in the lock directory with flags, takes a
// flock of kind how, and checks that it is a lock file still at its path.
// Besides real failures it returns errMissing (only without O_CREAT),
// errRemoved, an error wrapping ErrBusy when another process holds the
// flock too long, or one wrapping ErrNotLockFile. A file this Locker owns
// in the wrong mode (see wrongMode) is given its files' mode.
func (l *Locker) openLocked(ctx context.Context, name string, flags, how int) (locked, error) {
	fd, err := l.openat(name, flags, l.fileMode())
	switch {
	case err == unix.ENOENT && flags&unix.O_CREAT == 0:
		return locked{}, errMissing
	case err == unix.ELOOP:
		return locked{}, notLockFile(l.path(name), "a symlink")
	case err == unix.EISDIR:
		return locked{}, notLockFile(l.path(name), "a directory")
	case err == unix.ENXIO || err == unix.EOPNOTSUPP:
		return locked{}, notLockFile(l.path(name), "a socket")
	case err != nil:
		return locked{}, pathError("open", l.path(name), err)
	}
	return l.lockOpened(ctx, fd, name, how, nil)
}

// lockOpened is openLocked's work once name is open on fd; it closes fd
// when it fails. With pooled, fd was kept from an earlier operation (see
// fdPool) open on the file pooled names, and the checks are made on the
// file now at the path instead: errRemoved when it is another one.
func (l *Locker) lockOpened(ctx context.Context, fd int, name string, how int, pooled *fileIdent) (locked, error) {
	f := locked{fd: fd}
	err := l.flock(ctx, fd, how)
	if err != nil {
		_ = unix.Close(fd)
		if err == errBusyWait {
			return locked{}, &busyError{path: l.path(name), wait: l.cfg.busyWait}
		}
		return locked{}, pathError("flock", l.path(name), err)
	}
	if pooled != nil {
		f.info, err = l.statName(name)
		if err == nil && f.info.id != *pooled || err == unix.ENOENT {
			f.close()
			return locked{}, errRemoved
		}
		if err != nil {
			f.close()
			return locked{}, pathError("stat", l.path(name), err)
		}
	} else if f.info, err = fstat(fd); err != nil {
		f.close()
		return locked{}, pathError("fstat", l.path(name), err)
	}
	if f.info.nlink == 0 {
		f.close()
		return locked{}, errRemoved
	}
	if what := l.strange(f.info); what != "" {
		f.close()
		return locked{}, notLockFile(l.path(name), what)
	}
	if l.wrongMode(f.info) {
		// Best effort: a read-only filesystem refuses, and reading goes on.
		_ = unix.Fchmod(fd, l.fileMode())
	}
	return f, nil
}

// wrongMode reports whether a file this Locker owns needs its mode set:
// it grants more than this Locker's files get (0644 left by an older
// version or another implementation), or, in a shared directory, less
// than the group needs (the umask took it when the file was made).
func (l *Locker) wrongMode(info fileInfo) bool {
	mode, have := l.fileMode(), info.mode&0o7777
	return info.uid == l.uid && (have&^mode != 0 || l.cfg.shared && have != mode)
}

// openat opens name in the lock directory, retrying an interrupted open
// (of a FIFO, say).
func (l *Locker) openat(name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(l.dirfd, name, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
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

// readRecord reads the lock file's content into buf in one pread (a
// regular file reads short only at its end). oversized is true, and
// content nil, when the file holds more than len(buf)-1 bytes.
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
// record fn returns, if any, in place, and returns what it wrote. Without
// create a missing file is shown to fn as a view with exists false, and
// nothing is written. With create, a missing file is shown to fn the same
// way, and the record fn returns becomes the new file, published whole
// (see publish): nobody ever sees it empty or half written. fn may be
// called twice, when the file turns out to exist after all.
func (l *Locker) update(ctx context.Context, key string, create bool, fn func(v *view) (*record, error)) (written, error) {
	id, name := fileOf(key)
	s := l.getScratch()
	defer l.scratch.Put(s)
	tryNew := create && !l.known(id)
	for {
		if err := ctx.Err(); err != nil {
			return written{}, err
		}
		if tryNew {
			rec, done, err := l.createWith(ctx, name, s, id, fn)
			if done || err != nil {
				return rec, err
			}
			tryNew = false // it exists: update it
		}
		f, err := l.openPooled(ctx, id, name)
		switch {
		case err == errMissing:
			l.forget(id)
			if create {
				tryNew = true
				continue
			}
			s.v.reset(id)
			_, err := fn(&s.v)
			return written{}, err
		case err == errRemoved:
			continue
		case err != nil:
			return written{}, err
		}
		l.remember(id)
		rec, err := l.updateLocked(f, name, id, s, fn)
		_ = tryFlock(f.fd, unix.LOCK_UN)
		l.fds.put(id, f.fd, f.info.id)
		return rec, err
	}
}

// openPooled is openLocked for update: it starts from id's pooled
// descriptor when there is one (see fdPool), and opens name when there is
// none or its file is no longer the one at the path.
func (l *Locker) openPooled(ctx context.Context, id fileID, name string) (locked, error) {
	if fd, file, ok := l.fds.get(id); ok {
		f, err := l.lockOpened(ctx, fd, name, unix.LOCK_EX, &file)
		if err != errRemoved {
			return f, err
		}
	}
	return l.openLocked(ctx, name, lockFlags, unix.LOCK_EX)
}

// statName stats the entry name of the lock directory, not following a
// symlink.
func (l *Locker) statName(name string) (fileInfo, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(l.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fileInfo{}, err
	}
	return infoOf(&st), nil
}

// exists reports whether name is an entry of the lock directory.
func (l *Locker) exists(name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(l.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// createWith shows fn a missing file and publishes the record it returns
// as the new file name. done is false when the file exists.
func (l *Locker) createWith(ctx context.Context, name string, s *scratch, id fileID, fn func(v *view) (*record, error)) (w written, done bool, err error) {
	s.v.reset(id)
	out, err := fn(&s.v)
	if out == nil || err != nil {
		return written{}, true, err
	}
	s.out = encodePadded(s.out[:0], out, 0)
	fd, err := l.publish(name, s.out)
	if err != nil {
		done, err := l.notCreated(name, err)
		return written{}, done, err
	}
	defer l.pool(id, fd)
	l.remember(id)
	if !s.v.floorAt.IsZero() && time.Since(s.v.floorAt) >= floorFresh {
		if err := l.confirmFence(ctx, fd, name, out, s); err != nil {
			return written{}, true, err
		}
	}
	return out.written(), true, nil
}

// notCreated is createWith's answer when publishing name failed with err:
// not done when the file exists, to be rewritten in place. A full disk or
// quota fails a new file before its link could find the name taken.
// A function of its own, kept out of createWith's frame (see fileOf).
//
//go:noinline
func (l *Locker) notCreated(name string, err error) (done bool, _ error) {
	if err == unix.EEXIST || l.exists(name) {
		return false, nil
	}
	return true, pathError("create", l.path(name), err)
}

// pool gives fd, open on id's file with no flock held, to the pool, or
// closes it if it cannot tell which file it is.
func (l *Locker) pool(id fileID, fd int) {
	info, err := fstat(fd)
	if err != nil {
		_ = unix.Close(fd)
		return
	}
	l.fds.put(id, fd, info.id)
}

// confirmFence makes sure the new file name, published with rec on fd,
// carries a token above the floor as it is now, rewriting it if not: the
// floor reading rec's token came from is older than floorFresh (see
// floorCache). It fails if the file is no longer rec's.
func (l *Locker) confirmFence(ctx context.Context, fd int, name string, rec *record, s *scratch) error {
	floor, _, err := l.readFloor(ctx)
	if err != nil || rec.Fence > floor {
		return err
	}
	if err := l.flock(ctx, fd, unix.LOCK_EX); err != nil {
		return pathError("flock", l.path(name), err)
	}
	defer tryFlock(fd, unix.LOCK_UN)
	content, _, err := readRecord(fd, s.buf)
	if err != nil {
		return pathError("read", l.path(name), err)
	}
	if cur, ok := parseRecord(content); !ok || cur.LockID != rec.LockID {
		return fmt.Errorf("filelock: %s was taken from this obtain before it returned: %w", l.path(name), errRetake)
	}
	if floor >= maxFence {
		return fmt.Errorf("%w: %s holds %d", ErrFenceExhausted, l.floorPath(), floor)
	}
	rec.Fence = floor + 1
	s.out = encodePadded(s.out[:0], rec, len(content))
	if err := l.writeSized(fd, s.out, int64(len(content))); err != nil {
		return pathError("write", l.path(name), err)
	}
	return nil
}

// errRetake: a new lock file was taken over before its creator returned,
// which only a TTL shorter than the creation can cause.
var errRetake = errors.New("lease lost at once")

// updateLocked is update's work on a file it holds under flock.
func (l *Locker) updateLocked(f locked, name string, id fileID, s *scratch, fn func(v *view) (*record, error)) (written, error) {
	content, oversized, err := readRecord(f.fd, s.buf)
	if err != nil {
		return written{}, pathError("read", l.path(name), err)
	}
	s.v.found(id, content, oversized, &f.info)
	rec, err := fn(&s.v)
	if rec == nil || err != nil {
		return written{}, err
	}
	// A shorter record is padded over a longer one instead of truncating
	// the file, which keeps the write to one pwrite; an oversized file is
	// cut down once.
	s.out = encodePadded(s.out[:0], rec, len(content))
	if err := l.writeSized(f.fd, s.out, f.info.size); err != nil {
		return written{}, pathError("write", l.path(name), err)
	}
	if oversized {
		if err := unix.Ftruncate(f.fd, int64(len(s.out))); err != nil {
			return written{}, pathError("truncate", l.path(name), err)
		}
	}
	return rec.written(), nil
}

// writeSized writes b over a file of size bytes that holds one JSON value
// padded with spaces, so that a full disk cannot leave it half written: a
// file that must grow first grows by spaces (which leave the old value
// valid), and only then, with its blocks in place, is b written over it.
func (l *Locker) writeSized(fd int, b []byte, size int64) error {
	for off := size; off < int64(len(b)); {
		n := min(int64(len(b))-off, int64(len(spaces)))
		if err := writeAll(fd, spaces[:n], off); err != nil {
			return err
		}
		off += n
	}
	return writeAll(fd, b, 0)
}

func writeAll(fd int, b []byte, off int64) error {
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

// The seen table remembers, per Locker, which keys' files were there the
// last time it looked, so that Obtain tries the likelier of its two ways
// first: creating the file, or opening it. It only ever costs wasted system
// calls when wrong; both ways handle either case. Each of its sets holds
// two keys, the one seen last first, so that a few keys that come back
// often are not pushed out by each other: with one key per set, a hundred
// keys reused in turn collided in most runs, and each collision made every
// use of the two keys a failed create.
const seenSets = 4096

type seenSet [2]atomic.Uint64

func (l *Locker) seenSlot(id fileID) (*seenSet, uint64) {
	return &l.seen[binary.LittleEndian.Uint16(id[:2])%seenSets], binary.LittleEndian.Uint64(id[8:]) | 1
}

func (l *Locker) known(id fileID) bool {
	set, tag := l.seenSlot(id)
	return set[0].Load() == tag || set[1].Load() == tag
}

func (l *Locker) remember(id fileID) {
	set, tag := l.seenSlot(id)
	if set[0].Load() == tag || set[1].Load() == tag {
		return
	}
	// Two goroutines racing here may lose a key from the set: a
	// wasted system call later, not a wrong answer.
	set[1].Store(set[0].Load())
	set[0].Store(tag)
}

func (l *Locker) forget(id fileID) {
	set, tag := l.seenSlot(id)
	set[0].CompareAndSwap(tag, 0)
	set[1].CompareAndSwap(tag, 0)
}

// isPermission reports whether err says this process may not open a file.
func isPermission(err error) bool { return errors.Is(err, fs.ErrPermission) }
