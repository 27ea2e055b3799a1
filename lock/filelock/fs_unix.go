//go:build linux || darwin

package filelock

import (
	"time"

	"golang.org/x/sys/unix"
)

type fileInfo struct {
	mode    uint32 // type bits (S_IFMT) and permissions
	regular bool
	nlink   uint64
	uid     uint32
	gid     uint32
	size    int64
	id      fileIdent
	// ctime is the last change of content or metadata. Unlike the
	// modification time, nobody can set it (touch -d cannot).
	ctime time.Time
}

// fileIdent tells files apart: the device and inode numbers.
type fileIdent struct{ dev, ino uint64 }

func fstat(fd int) (fileInfo, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileInfo{}, err
	}
	return infoOf(&st), nil
}

func infoOf(st *unix.Stat_t) fileInfo {
	mode := uint32(st.Mode)
	return fileInfo{
		mode:    mode,
		regular: mode&unix.S_IFMT == unix.S_IFREG,
		nlink:   uint64(st.Nlink),
		uid:     st.Uid,
		gid:     st.Gid,
		size:    st.Size,
		id:      fileIdent{dev: uint64(st.Dev), ino: uint64(st.Ino)},
		ctime:   time.Unix(st.Ctim.Unix()),
	}
}

// kind names the file's type, for errors.
func (f fileInfo) kind() string {
	switch f.mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a fifo"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return "a file of unknown type"
}
