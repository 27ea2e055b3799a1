package main_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// composeFile is what TestComposeFile reads of docker-compose.yml.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		Internal bool `yaml:"internal"`
	} `yaml:"networks"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	PullPolicy  string            `yaml:"pull_policy"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Networks    []string          `yaml:"networks"`
	Volumes     []string          `yaml:"volumes"`
	Restart     string            `yaml:"restart"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// fileVariant returns compose with its commented file-engine variant
// applied as its comments say: the JOBLOCK_ENGINE line replaced by the
// commented settings, the volume lines uncommented.
func fileVariant(compose string) string {
	var out []string
	for _, line := range strings.Split(compose, "\n") {
		trimmed := strings.TrimSpace(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
		switch {
		case trimmed == "JOBLOCK_ENGINE: redis":
			continue
		case strings.HasPrefix(trimmed, "#   JOBLOCK_"):
			line = indent + strings.TrimPrefix(trimmed, "#   ")
		case strings.HasPrefix(trimmed, "# volumes:"), trimmed == "# locks:":
			line = indent + strings.TrimPrefix(trimmed, "# ")
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// TestComposeFile: docker-compose.yml is one an operator can keep (README,
// "Running it with Docker Compose"), and so is its file-engine variant.
// CI checks that Compose itself takes it (docker compose config); this
// checks what it says.
func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	dockerfile, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)
	tests := []struct {
		name    string
		compose string
		engine  string
	}{
		{"as it is", string(raw), "redis"},
		{"file-engine variant", fileVariant(string(raw)), "file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cf composeFile
			require.NoError(t, yaml.Unmarshal([]byte(tt.compose), &cf))
			assert.True(t, cf.Networks["backend"].Internal, "the backend network has no route out")

			redis, ok := cf.Services["redis"]
			require.True(t, ok, "a redis service")
			cmd := strings.Join(redis.Command, " ")
			assert.Contains(t, cmd, "--requirepass ${REDIS_PASSWORD:?", "Redis requires the password from .env")
			assert.Contains(t, cmd, "--appendonly yes", "AOF persistence")
			assert.Contains(t, redis.Volumes, "redis-data:/data", "the AOF on a volume")
			assert.Empty(t, redis.Ports, "Redis is not published")
			assert.Equal(t, []string{"backend"}, redis.Networks)
			assert.Equal(t, "unless-stopped", redis.Restart)
			assert.NotEmpty(t, redis.Healthcheck.Test)

			var built, roles []string
			first := ""
			for name, s := range cf.Services {
				if name == "redis" {
					continue
				}
				if first == "" {
					first = name
				}
				roles = append(roles, s.Environment["JOBLOCK_ROLE"])
				assert.Equal(t, "joblock:local", s.Image, name)
				if s.Build != nil {
					built = append(built, name)
				} else {
					assert.Equal(t, "never", s.PullPolicy, "%s runs the image built once", name)
				}
				assert.Equal(t, "unless-stopped", s.Restart, name)
				assert.Equal(t, []string{"CMD", "/usr/local/bin/worker", "-healthcheck"}, s.Healthcheck.Test, name)
				for _, p := range s.Ports {
					assert.True(t, strings.HasPrefix(p, "127.0.0.1:"), "%s publishes %s beyond 127.0.0.1", name, p)
				}
				assert.Contains(t, s.Networks, "backend", name)
				env := s.Environment
				assert.True(t, strings.HasPrefix(env["JOBLOCK_REDIS_PASSWORD"], "${REDIS_PASSWORD:?"), "%s: the password from .env", name)
				assert.NotContains(t, env["JOBLOCK_REDIS_URL"], "@", "%s: no password in the URL", name)
				assert.Equal(t, tt.engine, env["JOBLOCK_ENGINE"], name)
				for _, k := range []string{"JOBLOCK_ENGINE", "JOBLOCK_PREFIX", "JOBLOCK_LOCK_DIR", "JOBLOCK_REDIS_URL"} {
					assert.Equal(t, cf.Services[first].Environment[k], env[k], "%s and %s differ in %s", first, name, k)
				}
				if tt.engine == "file" {
					dir := env["JOBLOCK_LOCK_DIR"]
					require.NotEmpty(t, dir, name)
					assert.Contains(t, s.Volumes, "locks:"+dir, "%s mounts the shared lock volume", name)
					assert.Contains(t, string(dockerfile), "-m 0700 "+dir, "the image makes %s private to its user", dir)
				}
			}
			assert.Len(t, built, 1, "one image, built once: %v", built)
			assert.Contains(t, roles, "scheduler")
			assert.Contains(t, roles, "worker")
			if tt.engine == "file" {
				assert.Contains(t, cf.Volumes, "locks")
			}
		})
	}

	// The image: HTTP on the container's interfaces, the worker refusing a
	// lock directory no other replica sees, and its own healthcheck.
	for _, want := range []string{"JOBLOCK_HTTP=0.0.0.0:8080", "JOBLOCK_IN_CONTAINER=1", `CMD ["/usr/local/bin/worker", "-healthcheck"]`} {
		assert.Contains(t, string(dockerfile), want)
	}
}
