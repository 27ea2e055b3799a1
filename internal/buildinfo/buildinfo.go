// Package buildinfo says which version of joblock a binary was built
// from, as the Go toolchain recorded it.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// String returns "<program> <module version>", followed by the commit, its
// time and "(modified)" when the binary was built from a work tree with
// uncommitted changes, and the Go version. "go install ...@v1.2.0" gives
// v1.2.0; a build in a clone gives the toolchain's (devel) or its
// pseudo-version, with the commit. Binaries built without module support
// say "unknown".
func String(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " unknown (built without module information)"
	}
	return format(program, info)
}

func format(program string, info *debug.BuildInfo) string {
	parts := []string{program, info.Main.Version}
	if parts[1] == "" {
		parts[1] = "unknown"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		parts = append(parts, "commit "+rev[:min(12, len(rev))])
		if t := settings["vcs.time"]; t != "" {
			parts = append(parts, t)
		}
		if settings["vcs.modified"] == "true" {
			parts = append(parts, "(modified)")
		}
	}
	return strings.Join(append(parts, info.GoVersion), " ")
}
