//go:build linux || darwin

package filelock

import (
	"time"

	"golang.org/x/sys/unix"
)

type fileInfo struct {
	nlink uint64
	size  int64
	mtime time.Time
}

func fstat(fd int) (fileInfo, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileInfo{}, err
	}
	return fileInfo{nlink: uint64(st.Nlink), size: st.Size, mtime: time.Unix(st.Mtim.Unix())}, nil
}
