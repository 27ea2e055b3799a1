package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		give debug.BuildInfo
		want string
	}{
		{"go install of a tag", debug.BuildInfo{GoVersion: "go1.24.2", Main: debug.Module{Version: "v1.2.0"}}, "worker v1.2.0 go1.24.2"},
		{"a clean clone", debug.BuildInfo{GoVersion: "go1.24.2", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "7c85465e0123456789abcdef"}, {Key: "vcs.time", Value: "2025-11-26T01:09:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			"worker (devel) commit 7c85465e0123 2025-11-26T01:09:00Z go1.24.2"},
		{"local changes", debug.BuildInfo{GoVersion: "go1.24.2", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "7c85465"}, {Key: "vcs.modified", Value: "true"}}},
			"worker (devel) commit 7c85465 (modified) go1.24.2"},
		{"no version", debug.BuildInfo{GoVersion: "go1.24.2"}, "worker unknown go1.24.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, format("worker", &tt.give))
		})
	}
}

func TestString(t *testing.T) {
	got := String("lockctl")
	assert.True(t, strings.HasPrefix(got, "lockctl "), got)
	assert.True(t, strings.HasSuffix(got, " "+runtime.Version()), got)
}
