package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gofrs/flock"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"
)

// fsType names the filesystem dir (or its nearest existing parent) is on.
func fsType(dir string) string {
	for ; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil {
			switch st.Type {
			case unix.TMPFS_MAGIC:
				return "tmpfs"
			case unix.EXT4_SUPER_MAGIC:
				return "ext4"
			case unix.XFS_SUPER_MAGIC:
				return "xfs"
			case unix.OVERLAYFS_SUPER_MAGIC:
				return "overlayfs"
			case unix.BTRFS_SUPER_MAGIC:
				return "btrfs"
			}
			return fmt.Sprintf("fs 0x%x", st.Type)
		}
	}
	return "unknown"
}

// pairsFor runs pair for about d and returns pairs per second.
func pairsFor(d time.Duration, pair func(i int) error) (float64, error) {
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		for range 100 {
			if err := pair(n); err != nil {
				return 0, err
			}
			n++
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func fileSection(ctx context.Context, o options, _ *redis.Client) error {
	defaultDir := engine.DefaultDir()
	type contender struct {
		name string
		run  func() (float64, error)
	}
	engineRun := func(parent string, key func(i int) string) func() (float64, error) {
		return func() (float64, error) {
			dir, cleanup, err := tempDir(parent)
			if err != nil {
				return 0, err
			}
			defer cleanup()
			l, err := filelock.New(dir)
			if err != nil {
				return 0, err
			}
			defer l.Close()
			return pairsFor(time.Second, func(i int) error {
				lease, err := l.Obtain(ctx, key(i), time.Minute)
				if err != nil {
					return err
				}
				return l.Release(ctx, lease)
			})
		}
	}
	hot := func(int) string { return "hot" }
	reused := func(i int) string { return "reused-" + strconv.Itoa(i%100) }
	fresh := func(i int) string { return "new-" + strconv.Itoa(i) }
	contenders := []contender{
		{"joblock, one hot key (" + fsType(defaultDir) + ")", engineRun(defaultDir, hot)},
		{"joblock, 100 keys reused (" + fsType(defaultDir) + ")", engineRun(defaultDir, reused)},
		{"joblock, a new key each time, tmpfs", engineRun(tmpfsParent, fresh)},
		{"the spec's create-write-close-unlink (PHP's syscalls), tmpfs", specRun(tmpfsParent)},
		{"joblock, a new key each time, " + fsType(defaultDir) + " (the default directory)", engineRun(defaultDir, fresh)},
		{"the spec's create-write-close-unlink, " + fsType(defaultDir), specRun(defaultDir)},
		{"gofrs/flock TryLock+Unlock, one file (no TTL, owner or fencing: the floor)", flockRun(defaultDir)},
	}
	names := make([]string, len(contenders))
	byName := map[string]contender{}
	for i, c := range contenders {
		names[i], byName[c.name] = c.name, c
	}
	fmt.Printf("\n### File engine\n\nOne obtain + release on one goroutine, 1s per measurement; the default directory is %s.\n", defaultDir)
	ms, err := interleave(o.rounds, names, func(name string) (float64, error) { return byName[name].run() })
	if err != nil {
		return err
	}
	table("one obtain + release", "pairs/s", "µs/pair")
	for _, m := range ms {
		row(m.name, thousands(m.median()), fmt.Sprintf("%.1f", 1e6/m.median()))
	}
	return nil
}

func tempDir(parent string) (string, func(), error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(parent, "bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// specRun does what the spec's LockManager does per acquire and release of
// a new key: create md5(key).lock exclusively, write the record, close;
// delete it on release.
func specRun(parent string) func() (float64, error) {
	return func() (float64, error) {
		dir, cleanup, err := tempDir(parent)
		if err != nil {
			return 0, err
		}
		defer cleanup()
		return pairsFor(time.Second, func(i int) error {
			path, err := specCreate(dir, "new-"+strconv.Itoa(i))
			if err != nil {
				return err
			}
			return os.Remove(path)
		})
	}
}

// specName is key's lock file name as the spec gives it: md5 in hex and
// ".lock".
func specName(key string) string {
	sum := md5.Sum([]byte(key))
	return hex.EncodeToString(sum[:]) + ".lock"
}

// specCreate is the spec's acquire of a new key: create md5(key).lock
// exclusively, write the record, close. It returns the file's path.
func specCreate(dir, key string) (string, error) {
	path := filepath.Join(dir, specName(key))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(map[string]any{"lock_id": "lock_x", "key": key, "expires_at": time.Now().Unix() + 30,
		"acquired_at": time.Now().Unix(), "pid": os.Getpid()})
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

func flockRun(parent string) func() (float64, error) {
	return func() (float64, error) {
		dir, cleanup, err := tempDir(parent)
		if err != nil {
			return 0, err
		}
		defer cleanup()
		f := flock.New(filepath.Join(dir, "hot.lock"))
		defer f.Close()
		return pairsFor(time.Second, func(int) error {
			if ok, err := f.TryLock(); err != nil || !ok {
				return fmt.Errorf("trylock: %v %v", ok, err)
			}
			return f.Unlock()
		})
	}
}

// lockerIn opens a file engine in a fresh directory under parent.
func lockerIn(parent string) (*filelock.Locker, func(), error) {
	dir, cleanup, err := tempDir(parent)
	if err != nil {
		return nil, nil, err
	}
	l, err := filelock.New(dir)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return l, func() { _ = l.Close(); cleanup() }, nil
}

var _ lock.Locker = (*filelock.Locker)(nil)
