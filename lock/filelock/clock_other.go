//go:build !linux && !darwin

package filelock

import "time"

func bootID() string { return "" }

func bootElapsed() time.Duration { return 0 }
