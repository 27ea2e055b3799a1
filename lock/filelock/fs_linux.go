package filelock

import "golang.org/x/sys/unix"

// networkFS names the filesystem of the open directory dirfd when it is
// one whose locks do not hold across hosts or whose flock is emulated, and
// "" otherwise.
func networkFS(dirfd int) (string, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &st); err != nil {
		return "", err
	}
	switch uint32(st.Type) {
	case 0x6969:
		return "nfs", nil
	case 0x517b:
		return "smb", nil
	case 0xff534d42:
		return "cifs", nil
	case 0xfe534d42:
		return "smb2", nil
	case 0x01021997:
		return "9p", nil
	}
	return "", nil
}
