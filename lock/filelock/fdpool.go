//go:build linux || darwin

package filelock

import (
	"sync"

	"golang.org/x/sys/unix"
)

// fdPoolSize is how many idle lock file descriptors a Locker keeps.
const fdPoolSize = 128

// fdPool keeps the descriptors of lock files a Locker used lately, so that
// an operation on a key that comes back skips an open and a close. A
// descriptor belongs to one operation at a time: get takes it out of the
// pool and put gives it back, never under a flock (a flock belongs to the
// open file description, which two operations sharing a descriptor would
// share). A pooled descriptor may name a file that is no longer at its
// path (removed, or moved away by hand); the operation that gets it
// compares, under its flock, the file at the path with the one it
// remembers, and opens the path again when they differ (see openPooled).
type fdPool struct {
	mu     sync.Mutex
	byID   map[fileID]*fdNode
	newest *fdNode // the list runs from the most recently put to the least
	oldest *fdNode
	spare  *fdNode // nodes to reuse, so the pool does not allocate per operation
	closed bool
}

type fdNode struct {
	id           fileID
	fd           int
	file         fileIdent // the file fd was open on when it was put
	newer, older *fdNode
}

// get takes id's descriptor out of the pool, if it has one, with the
// file it is open on.
func (p *fdPool) get(id fileID) (int, fileIdent, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.byID[id]
	if n == nil {
		return -1, fileIdent{}, false
	}
	p.unlink(n)
	fd, file := n.fd, n.file
	n.older, p.spare = p.spare, n
	return fd, file, true
}

// put gives fd, id's descriptor open on file with no flock held, to the
// pool, closing the least recently used one when the pool is full, or fd
// itself when the pool already has one for id or is closed.
func (p *fdPool) put(id fileID, fd int, file fileIdent) {
	drop := -1
	p.mu.Lock()
	switch {
	case p.closed || p.byID[id] != nil:
		drop = fd
	default:
		if p.byID == nil {
			p.byID = make(map[fileID]*fdNode, fdPoolSize)
		}
		if len(p.byID) >= fdPoolSize {
			old := p.oldest
			p.unlink(old)
			drop = old.fd
			old.older, p.spare = p.spare, old
		}
		n := p.spare
		if n != nil {
			p.spare = n.older
		} else {
			n = &fdNode{}
		}
		*n = fdNode{id: id, fd: fd, file: file, older: p.newest}
		if p.newest != nil {
			p.newest.newer = n
		} else {
			p.oldest = n
		}
		p.newest = n
		p.byID[id] = n
	}
	p.mu.Unlock()
	if drop >= 0 {
		_ = unix.Close(drop)
	}
}

// unlink takes n out of the list and the map. p.mu must be held.
func (p *fdPool) unlink(n *fdNode) {
	if n.newer != nil {
		n.newer.older = n.older
	} else {
		p.newest = n.older
	}
	if n.older != nil {
		n.older.newer = n.newer
	} else {
		p.oldest = n.newer
	}
	n.newer, n.older = nil, nil
	delete(p.byID, n.id)
}

// close closes every pooled descriptor; later puts close theirs.
func (p *fdPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for n := p.newest; n != nil; n = n.older {
		_ = unix.Close(n.fd)
	}
	p.byID, p.newest, p.oldest, p.spare = nil, nil, nil, nil
}
