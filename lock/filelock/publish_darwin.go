package filelock

import "golang.org/x/sys/unix"

// publishTmpfile returns errTryNext: macOS has no O_TMPFILE.
func (l *Locker) publishTmpfile(string, []byte, int32) (int, error) { return -1, errTryNext }

// renameNoReplace renames from to to in dirfd unless to exists (EEXIST).
func renameNoReplace(dirfd int, from, to string) error {
	return unix.RenameatxNp(dirfd, from, dirfd, to, unix.RENAME_EXCL)
}
