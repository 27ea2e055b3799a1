package engine

import "golang.org/x/sys/unix"

// onTmpfs reports whether path is on a tmpfs.
func onTmpfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// writable reports whether this process may create entries in the
// directory path.
func writable(path string) bool { return unix.Access(path, unix.W_OK|unix.X_OK) == nil }
