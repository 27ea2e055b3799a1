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
	"text/template/parse"
	"unicode"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
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
	var buf [32]byte
	return string(appendHash(buf[:0], payload))
}

func appendHash(b, payload []byte) []byte {
	sum := sha256.Sum256(payload)
	return hex.AppendEncode(b, sum[:16])
}

// DefaultKey is the key when a rule names none: the task type and the hash
// of its payload, so identical tasks exclude each other and different ones
// do not.
func DefaultKey(_ context.Context, t *asynq.Task) (string, error) {
	b := make([]byte, 0, len(t.Type())+1+32)
	b = append(append(b, t.Type()...), ':')
	return string(appendHash(b, t.Payload())), nil
}

// KeyTemplate parses text once, as a text/template executed over the task's
// JSON payload object. Besides the payload's fields, {{._type}},
// {{._queue}} and {{._hash}} give the task type, queue and payload hash.
//
// A field renders as its value: a string as its text, true or false, a
// number in one canonical form: 42, 42.0 and 4.2e1 all render 42. Numbers
// never go through float64, so beyond 2^53 they stay exact:
// 9007199254740993 and 9007199254740992 are different keys, as handlers
// decoding them into int64 or uint64 see them (one decoding into float64,
// or into any without UseNumber, sees one number: send such IDs as
// strings). A field that is missing, null, empty or only white space, an
// object or an array is an error naming it, and so fails the task without
// retries: a key made of nothing would make unrelated tasks share a lock.
// So is a string holding a control character, which no engine takes.
//
// A payload holding a field the template reads twice in one object,
// exactly or in another case ("user_id" and "USER_ID", or "uſer_id", which
// folds to it) is refused as ambiguous: encoding/json hands a handler's
// struct field the last of them, whatever the template took.
//
// Templates made only of text and {{.field}} or {{.field.sub}} actions are
// rendered straight from the payload's bytes. Anything else (functions,
// conditions) runs text/template over the decoded payload under the same
// rules: numbers anywhere in it are canonical; an object, an array, a null
// or an empty string that an action or a function prints into the key is
// an error naming the field, while index, eq, len and range work on them;
// a field the template names anywhere may not be held twice in any object,
// and a template that ranges or indexes with computed keys may not meet
// two members of one object named alike at all. There, null members are
// missing ones, index fails on a missing key as a field does, and a member
// named Format is read with index rather than as a field. KeyTemplate
// returns an error for a template that does not parse.
//
//	KeyTemplate("export-user-{{.user_id}}")
func KeyTemplate(text string) (KeyFunc, error) {
	key, _, err := compileTemplate(text)
	return key, err
}

// compileTemplate is KeyTemplate, with a fieldTemplate when the template
// is a simple one (text and fields only).
func compileTemplate(text string) (KeyFunc, *fieldTemplate, error) {
	tmpl, err := template.New("key").Option("missingkey=error").Funcs(templateFuncs()).Parse(text)
	if err != nil {
		return nil, nil, fmt.Errorf("middleware: key template %q: %w", text, err)
	}
	if parts, ok := compileFields(tmpl.Tree); ok {
		return parts.key, &parts, nil
	}
	return newTextTemplate(text, tmpl).key, nil, nil
}

// part is a piece of a simple template: literal text, or a field path.
type part struct {
	text string
	path []string
}

type fieldTemplate struct {
	parts []part
	size  int // bytes of literal text
}

// compileFields turns a template made only of text and field actions into
// parts; ok is false for anything else.
func compileFields(tree *parse.Tree) (fieldTemplate, bool) {
	var ft fieldTemplate
	for _, n := range tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			ft.parts = append(ft.parts, part{text: string(n.Text)})
			ft.size += len(n.Text)
		case *parse.ActionNode:
			p := n.Pipe
			if len(p.Decl) != 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
				return ft, false
			}
			f, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok {
				return ft, false
			}
			ft.parts = append(ft.parts, part{path: f.Ident})
		default:
			return ft, false
		}
	}
	return ft, true
}

// key renders the template as a KeyFunc.
func (ft fieldTemplate) key(ctx context.Context, t *asynq.Task) (string, error) {
	var b strings.Builder
	b.Grow(ft.size + 32)
	if err := ft.write(&b, ctx, t); err != nil {
		return "", err
	}
	return b.String(), nil
}

// write renders the template into b.
func (ft fieldTemplate) write(b *strings.Builder, ctx context.Context, t *asynq.Task) error {
	payload := bytes.TrimSpace(t.Payload())
	if len(payload) > 0 && (!json.Valid(payload) || payload[0] != '{') {
		return payloadError(payload)
	}
	for _, p := range ft.parts {
		if p.path == nil {
			b.WriteString(p.text)
			continue
		}
		if err := writeField(b, ctx, t, payload, p.path); err != nil {
			return err
		}
	}
	return nil
}

// payloadError says what is wrong with a payload that is not a JSON object.
func payloadError(p []byte) error {
	dec := json.NewDecoder(bytes.NewReader(p))
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("payload is not JSON: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return errors.New("payload is not a JSON object")
	}
	return errors.New("payload is not JSON: data after the object")
}

func writeField(b *strings.Builder, ctx context.Context, t *asynq.Task, payload []byte, path []string) error {
	if len(path) == 1 {
		switch path[0] {
		case FieldType:
			b.WriteString(t.Type())
			return nil
		case FieldQueue:
			b.WriteString(QueueName(ctx))
			return nil
		case FieldHash:
			var buf [32]byte
			b.Write(appendHash(buf[:0], t.Payload()))
			return nil
		}
	}
	name := strings.Join(path, ".")
	raw := payload
	for i, field := range path {
		if len(raw) == 0 || raw[0] != '{' {
			if i == 0 {
				return fmt.Errorf("payload has no field %q", name)
			}
			return fmt.Errorf("field %q: %q is not an object", name, strings.Join(path[:i], "."))
		}
		m := member(raw, field)
		if m.second != nil {
			return ambiguous(strings.Join(path[:i+1], "."), m.first, m.second)
		}
		if !m.found {
			return fmt.Errorf("payload has no field %q", name)
		}
		raw = m.raw
	}
	return writeValue(b, raw, name)
}

// ambiguous is the error for a field that two members of one object, a
// and b (quoted), both name, exactly or under case folding.
func ambiguous(field string, a, b []byte) error {
	how := fmt.Sprintf("as both %s and %s", a, b)
	if bytes.Equal(a, b) {
		how = "twice"
	}
	return fmt.Errorf("field %q is ambiguous: the payload has it %s, and a handler may read either", field, how)
}

// writeValue renders one JSON value of a key field.
func writeValue(b *strings.Builder, raw []byte, name string) error {
	switch raw[0] {
	case '"':
		if s := raw[1 : len(raw)-1]; plainASCII(s) {
			// Raw control characters are not valid JSON: only DEL can be here.
			if bytes.Count(s, []byte(" ")) == len(s) {
				return blankField(name)
			}
			if bytes.IndexByte(s, 0x7f) >= 0 {
				return controlField(name, 0x7f)
			}
			b.Write(s)
			return nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
		if err := checkString(s, name); err != nil {
			return err
		}
		b.WriteString(s)
		return nil
	case 'n':
		return fmt.Errorf("field %q is null", name)
	case 't', 'f':
		b.Write(raw)
		return nil
	case '{':
		return fmt.Errorf("field %q is an object, not a value", name)
	case '[':
		return fmt.Errorf("field %q is an array, not a value", name)
	}
	if plainInt(raw) && string(raw) != "-0" {
		b.Write(raw)
		return nil
	}
	n, err := canonicalNumber(raw)
	if err != nil {
		return fmt.Errorf("field %q: %w", name, err)
	}
	b.WriteString(n)
	return nil
}

// checkString refuses a string field that would make a key of nothing, or
// one that no engine accepts.
func checkString(s, name string) error {
	if strings.TrimSpace(s) == "" {
		return blankField(name)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return controlField(name, r)
		}
	}
	return nil
}

func blankField(name string) error {
	return fmt.Errorf("field %q is empty or only white space", name)
}

func controlField(name string, r rune) error {
	return fmt.Errorf("%w: field %q holds control character %U", lock.ErrInvalidKey, name, r)
}

// plainASCII reports whether a JSON string's contents need no decoding.
func plainASCII(s []byte) bool {
	for _, c := range s {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}
