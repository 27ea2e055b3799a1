package middleware_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyTemplate(t *testing.T) {
	tests := []struct {
		name     string
		template string
		payload  string
		want     string
		wantErr  string
	}{
		{"field", "export-user-{{.user_id}}", `{"user_id": 42}`, "export-user-42", ""},
		{"big number kept exact", "job-{{.id}}", `{"id": 12345678901234567890}`, "job-12345678901234567890", ""},
		{"nested", "cdn-{{.target.host}}", `{"target": {"host": "example.com"}}`, "cdn-example.com", ""},
		{"task fields", "{{._type}}/{{._queue}}/{{._hash}}", `{}`, "export:user//" + middleware.PayloadHash([]byte(`{}`)), ""},
		{"missing field", "export-user-{{.user_id}}", `{"id": 1}`, "", `map has no entry for key "user_id"`},
		{"empty payload", "export-user-{{.user_id}}", ``, "", `no entry for key "user_id"`},
		{"not JSON", "export-user-{{.user_id}}", `user=42`, "", "payload is not JSON"},
		{"not an object", "export-user-{{.user_id}}", `[1,2]`, "", "payload is not a JSON object"},
		{"trailing data", "export-user-{{.user_id}}", `{"user_id":1} {}`, "", "data after the object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := middleware.KeyTemplate(tt.template)
			require.NoError(t, err)
			got, err := key(context.Background(), asynq.NewTask("export:user", []byte(tt.payload)))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestKeyTemplateParseError(t *testing.T) {
	_, err := middleware.KeyTemplate("export-{{.user_id")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "export-{{.user_id")

	_, err = middleware.New(newFileLocker(t), middleware.WithRule("export:*", middleware.Rule{Template: "{{ bad"}))
	require.Error(t, err, "a bad template is an error at construction")
	assert.Contains(t, err.Error(), `rule "export:*"`)
}

func TestDefaultKey(t *testing.T) {
	ctx := context.Background()
	a, err := middleware.DefaultKey(ctx, asynq.NewTask("cache:regen", []byte(`{"id":1}`)))
	require.NoError(t, err)
	b, err := middleware.DefaultKey(ctx, asynq.NewTask("cache:regen", []byte(`{"id":1}`)))
	require.NoError(t, err)
	c, err := middleware.DefaultKey(ctx, asynq.NewTask("cache:regen", []byte(`{"id":2}`)))
	require.NoError(t, err)
	assert.Equal(t, a, b, "identical tasks share a key")
	assert.NotEqual(t, a, c)
	assert.True(t, strings.HasPrefix(a, "cache:regen:"))
}

// FuzzKeyTemplate: whatever the payload, a template key either renders or
// fails with an error; it never panics.
func FuzzKeyTemplate(f *testing.F) {
	key, err := middleware.KeyTemplate("k-{{.a}}-{{._type}}")
	require.NoError(f, err)
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`{"a":{"b":[1,2]}}`))
	f.Add([]byte(`nope`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := key(context.Background(), asynq.NewTask("t", payload))
		if err == nil {
			assert.True(t, strings.HasPrefix(got, "k-"))
		}
	})
}
