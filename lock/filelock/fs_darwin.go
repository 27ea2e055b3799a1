package filelock

import "golang.org/x/sys/unix"

// networkFS names the filesystem at dir when it is one whose locks do not
// hold across hosts, and "" otherwise.
func networkFS(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", err
	}
	name := unix.ByteSliceToString(st.Fstypename[:])
	switch name {
	case "nfs", "smbfs", "afpfs", "webdav":
		return name, nil
	}
	return "", nil
}
