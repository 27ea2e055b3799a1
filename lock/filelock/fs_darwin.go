package filelock

import "golang.org/x/sys/unix"

// networkFS names the filesystem of the open directory dirfd when it is
// one whose locks do not hold across hosts, and "" otherwise.
func networkFS(dirfd int) (string, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &st); err != nil {
		return "", err
	}
	name := unix.ByteSliceToString(st.Fstypename[:])
	switch name {
	case "nfs", "smbfs", "afpfs", "webdav":
		return name, nil
	}
	return "", nil
}
