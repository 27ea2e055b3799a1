package middleware

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/hibiken/asynq"
)

// KeyFunc derives a task's lock key, before the middleware's prefix is
// added. An error fails the task without retries.
type KeyFunc func(ctx context.Context, t *asynq.Task) (string, error)

// Fields a key template can use besides the payload's own.
const (
	FieldType  = "_type"  // the task type
	FieldQueue = "_queue" // the queue the task came from
	FieldHash  = "_hash"  // PayloadHash of the payload
)

// PayloadHash returns the first 16 bytes of the SHA-256 of payload in hex.
func PayloadHash(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:16])
}

// DefaultKey is the key when a rule names none: the task type and the hash
// of its payload, so identical tasks exclude each other and different ones
// do not.
func DefaultKey(_ context.Context, t *asynq.Task) (string, error) {
	return t.Type() + ":" + PayloadHash(t.Payload()), nil
}

// KeyTemplate parses text once, as a text/template executed over the task's
// JSON payload object with missing keys an error. Besides the payload's
// fields, {{._type}}, {{._queue}} and {{._hash}} give the task type, queue
// and payload hash. Numbers render as written in the payload. It returns an
// error for a template that does not parse.
//
//	KeyTemplate("export-user-{{.user_id}}")
func KeyTemplate(text string) (KeyFunc, error) {
	tmpl, err := template.New("key").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("middleware: key template %q: %w", text, err)
	}
	return func(ctx context.Context, t *asynq.Task) (string, error) {
		data, err := templateData(ctx, t)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		if err := tmpl.Execute(&b, data); err != nil {
			return "", fmt.Errorf("key template %q: %w", text, err)
		}
		return b.String(), nil
	}, nil
}

func templateData(ctx context.Context, t *asynq.Task) (map[string]any, error) {
	data := map[string]any{}
	if p := bytes.TrimSpace(t.Payload()); len(p) > 0 {
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.UseNumber()
		if err := dec.Decode(&data); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return nil, fmt.Errorf("payload is not a JSON object")
			}
			return nil, fmt.Errorf("payload is not JSON: %w", err)
		}
		if dec.More() {
			return nil, fmt.Errorf("payload is not JSON: data after the object")
		}
	}
	queue, _ := asynq.GetQueueName(ctx)
	data[FieldType] = t.Type()
	data[FieldQueue] = queue
	data[FieldHash] = PayloadHash(t.Payload())
	return data, nil
}
