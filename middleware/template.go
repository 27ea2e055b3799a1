package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"

	"github.com/hibiken/asynq"
)

// The general path: templates with functions or conditions run
// text/template over the decoded payload. The payload decodes into types
// that keep the simple path's promises: numbers in canonical form, and
// values that must not end up in a key (objects, arrays, nulls, empty or
// white-space strings) formatting as a mark that the renderer finds in the
// key and turns into an error naming the field.

type (
	jsonObject  map[string]any
	jsonArray   []any
	blankString string // empty or only white space
	jsonNull    struct{}
)

// A null member is left out of its object, so that using it is a missing
// key; a null element of an array is a nil *jsonNull.

// badMark starts the mark of a value that must not end up in a key. It is
// letters only, so that html, js and urlquery leave it as it is; a payload
// string holding it only gets its task refused.
const badMark = "JOBLOCKxBADxVALUEx"

// Kinds of values in a mark.
const (
	kindObject = "object"
	kindArray  = "array"
	kindBlank  = "blank"
	kindNull   = "null"
)

// Format writes the value's mark whatever the verb, so that printf's %d or
// %x cannot slip an object into a key either. Format rather than String:
// a template reading a member named "Format" as a field calls the method
// without its arguments, which fails, where String would stand in for the
// member.
func (o jsonObject) Format(f fmt.State, _ rune) {
	writeMark(f, kindObject, reflect.ValueOf(o).Pointer())
}

func (a jsonArray) Format(f fmt.State, _ rune) {
	writeMark(f, kindArray, reflect.ValueOf(a).Pointer())
}

func (blankString) Format(f fmt.State, _ rune) { writeMark(f, kindBlank, 0) }

func (*jsonNull) Format(f fmt.State, _ rune) { writeMark(f, kindNull, 0) }

// writeMark writes badMark, the kind, and for objects and arrays their
// address, by which the renderer finds which one it was.
func writeMark(w io.Writer, kind string, addr uintptr) {
	_, _ = io.WriteString(w, badMark+kind+"x"+strconv.FormatUint(uint64(addr), 10)+"x")
}

// textTemplate is a template for text/template.
type textTemplate struct {
	text string
	tmpl *template.Template
	// used holds the folded names of the fields the template reads: two
	// members that fold to one of them make a payload ambiguous. With all,
	// the template ranges over values or indexes them by computed keys, and
	// any two members of an object that fold alike make it ambiguous.
	used map[string]bool
	all  bool
	// names holds the names the template reads as it spells them.
	names map[string]bool
}

func newTextTemplate(text string, tmpl *template.Template) *textTemplate {
	tt := &textTemplate{text: text, tmpl: tmpl, used: map[string]bool{}, names: map[string]bool{}}
	for _, t := range tmpl.Templates() {
		if t.Tree != nil {
			tt.visit(t.Root)
		}
	}
	return tt
}

// visit collects the field names node reads.
func (tt *textTemplate) visit(node parse.Node) {
	use := func(names ...string) {
		for _, n := range names {
			tt.used[foldName(n)] = true
			tt.names[n] = true
		}
	}
	switch n := node.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			tt.visit(c)
		}
	case *parse.ActionNode:
		tt.visit(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			tt.visit(c)
		}
	case *parse.CommandNode:
		if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" && len(n.Args) > 2 {
			for _, a := range n.Args[2:] {
				switch a := a.(type) {
				case *parse.StringNode:
					use(a.Text)
				case *parse.NumberNode:
				default:
					tt.all = true // a computed key
				}
			}
		}
		for _, c := range n.Args {
			tt.visit(c)
		}
	case *parse.FieldNode:
		use(n.Ident...)
	case *parse.ChainNode:
		use(n.Field...)
		tt.visit(n.Node)
	case *parse.VariableNode:
		use(n.Ident[1:]...)
	case *parse.IfNode:
		tt.visitBranch(&n.BranchNode)
	case *parse.WithNode:
		tt.visitBranch(&n.BranchNode)
	case *parse.RangeNode:
		tt.all = true // over an object's members, whatever their names
		tt.visitBranch(&n.BranchNode)
	case *parse.TemplateNode:
		tt.visit(n.Pipe)
	}
}

func (tt *textTemplate) visitBranch(n *parse.BranchNode) {
	tt.visit(n.Pipe)
	tt.visit(n.List)
	tt.visit(n.ElseList)
}

// key renders the template as a KeyFunc.
func (tt *textTemplate) key(ctx context.Context, t *asynq.Task) (string, error) {
	d := decoder{tt: tt}
	data := jsonObject{}
	if p := bytes.TrimSpace(t.Payload()); len(p) > 0 {
		if !json.Valid(p) || p[0] != '{' {
			return "", payloadError(p)
		}
		var err error
		if data, err = d.object(p); err != nil {
			return "", err
		}
	}
	data[FieldType] = t.Type()
	data[FieldQueue] = QueueName(ctx)
	data[FieldHash] = PayloadHash(t.Payload())
	var b strings.Builder
	if err := tt.tmpl.Execute(&b, data); err != nil {
		return "", fmt.Errorf("key template %q: %w", tt.text, err)
	}
	key := b.String()
	if i := strings.Index(key, badMark); i >= 0 {
		return "", tt.badValue(data, key[i+len(badMark):])
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			if names := tt.find(data, func(v any) bool { return holds(v, r) }); len(names) > 0 {
				return "", controlField(names[0], r)
			}
			break // the template's own text: ValidateKey says so
		}
	}
	return key, nil
}

// holds reports whether v is a string holding r.
func holds(v any, r rune) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, r)
	case blankString:
		return strings.ContainsRune(string(v), r)
	}
	return false
}

// decoder decodes one payload for a textTemplate.
type decoder struct {
	tt   *textTemplate
	path []string // of the value being decoded
}

func (d *decoder) at() string {
	if len(d.path) == 0 {
		return "."
	}
	return strings.Join(d.path, "")
}

// push appends a member's name to the path.
func (d *decoder) push(name string) {
	if len(d.path) > 0 {
		name = "." + name
	}
	d.path = append(d.path, name)
}

func (d *decoder) pop() { d.path = d.path[:len(d.path)-1] }

func (d *decoder) value(raw []byte) (any, error) {
	switch raw[0] {
	case '{':
		return d.object(raw)
	case '[':
		return d.array(raw)
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("field %q: %w", d.at(), err)
		}
		if strings.TrimSpace(s) == "" {
			return blankString(s), nil
		}
		return s, nil
	case 'n':
		return (*jsonNull)(nil), nil
	case 't':
		return true, nil
	case 'f':
		return false, nil
	}
	n, err := canonicalNumber(raw)
	if err != nil {
		return nil, fmt.Errorf("field %q: %w", d.at(), err)
	}
	return n, nil
}

func (d *decoder) object(raw []byte) (jsonObject, error) {
	obj := jsonObject{}
	type member struct {
		name   string
		quoted []byte
	}
	var seen map[string]member // by folded name
	it := newObjectIter(raw)
	for {
		key, value, ok := it.next()
		if !ok {
			return obj, nil
		}
		var name string
		if err := json.Unmarshal(key, &name); err != nil {
			return nil, fmt.Errorf("field %q: %w", d.at(), err)
		}
		if folded := foldName(name); d.tt.all || d.tt.used[folded] {
			if first, dup := seen[folded]; dup {
				if !d.tt.names[name] {
					name = first.name // named as the template spells it, if it does
				}
				d.push(name)
				return nil, ambiguous(d.at(), first.quoted, key)
			}
			if seen == nil {
				seen = map[string]member{}
			}
			seen[folded] = member{name, key}
		}
		d.push(name)
		v, err := d.value(value)
		d.pop()
		if err != nil {
			return nil, err
		}
		if v == (*jsonNull)(nil) {
			delete(obj, name) // a null member is a missing one, even after a duplicate
			continue
		}
		obj[name] = v
	}
}

func (d *decoder) array(raw []byte) (jsonArray, error) {
	arr := make(jsonArray, 0, 1) // never of size zero: its address is its own
	it := newArrayIter(raw)
	for i := 0; ; i++ {
		value, ok := it.next()
		if !ok {
			break
		}
		d.path = append(d.path, "["+strconv.Itoa(i)+"]")
		v, err := d.value(value)
		d.pop()
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	return arr, nil
}

// badValue is the error for a key holding a mark, rest being what follows
// badMark.
func (tt *textTemplate) badValue(data jsonObject, rest string) error {
	kind, rest, _ := strings.Cut(rest, "x")
	addr, _, _ := strings.Cut(rest, "x")
	at, _ := strconv.ParseUint(addr, 10, 64)
	names := tt.find(data, func(v any) bool {
		switch v := v.(type) {
		case jsonObject:
			return kind == kindObject && (at == 0 || uint64(reflect.ValueOf(v).Pointer()) == at)
		case jsonArray:
			return kind == kindArray && (at == 0 || uint64(reflect.ValueOf(v).Pointer()) == at)
		case blankString:
			return kind == kindBlank
		case *jsonNull:
			return kind == kindNull
		}
		return false
	})
	what := map[string]string{
		kindObject: "is an object, not a value",
		kindArray:  "is an array, not a value",
		kindBlank:  "is empty or only white space",
		kindNull:   "is null",
	}[kind]
	if what == "" {
		what = "cannot be part of a key" // a payload string holding a mark
	}
	switch len(names) {
	case 0:
		return fmt.Errorf("key template %q: a value printed into the key %s", tt.text, what)
	case 1:
		return fmt.Errorf("field %q %s", names[0], what)
	}
	return fmt.Errorf("key template %q: one of the fields %s %s", tt.text, quoteAll(names), what)
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// find returns the paths of the values in data that match, shallowest
// first; of those in fields the template reads, if there are any.
func (tt *textTemplate) find(data jsonObject, match func(any) bool) []string {
	type hit struct {
		path  string
		depth int
		read  bool
	}
	var hits []hit
	var walk func(v any, path string, depth int, read bool)
	walk = func(v any, path string, depth int, read bool) {
		if match(v) {
			hits = append(hits, hit{path, depth, read})
		}
		switch v := v.(type) {
		case jsonObject:
			for k, e := range v {
				if depth == 0 {
					if k == FieldType || k == FieldQueue || k == FieldHash {
						continue
					}
					walk(e, k, 1, tt.used[foldName(k)])
					continue
				}
				walk(e, path+"."+k, depth+1, read)
			}
		case jsonArray:
			for i, e := range v {
				walk(e, path+"["+strconv.Itoa(i)+"]", depth+1, read)
			}
		}
	}
	walk(data, ".", 0, false)
	slices.SortFunc(hits, func(a, b hit) int {
		if a.depth != b.depth {
			return a.depth - b.depth
		}
		return strings.Compare(a.path, b.path)
	})
	var names, read []string
	for _, h := range hits {
		names = append(names, h.path)
		if h.read {
			read = append(read, h.path)
		}
	}
	if len(read) > 0 {
		return read
	}
	return names
}

// funcs are the functions a key template gets besides text/template's.
func templateFuncs() template.FuncMap {
	return template.FuncMap{"index": index}
}

// index is text/template's index, except that a key missing from an
// object is an error, as it is for a field, rather than a value that
// prints as "<no value>".
func index(item reflect.Value, keys ...reflect.Value) (reflect.Value, error) {
	for _, k := range keys {
		item, k = indirectInterface(item), indirectInterface(k)
		switch item.Kind() {
		case reflect.Map:
			if k.Kind() != reflect.String {
				return reflect.Value{}, fmt.Errorf("cannot index an object with %s", describe(k))
			}
			v := item.MapIndex(reflect.ValueOf(k.String()))
			if !v.IsValid() {
				return reflect.Value{}, fmt.Errorf("map has no entry for key %q", k.String())
			}
			item = v
		case reflect.Slice, reflect.String:
			var i int64
			switch k.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				i = k.Int()
			default:
				return reflect.Value{}, fmt.Errorf("cannot index %s with %s", describe(item), describe(k))
			}
			if i < 0 || i >= int64(item.Len()) {
				return reflect.Value{}, fmt.Errorf("index out of range: %d", i)
			}
			item = item.Index(int(i))
		default:
			return reflect.Value{}, fmt.Errorf("can't index item of type %s", describe(item))
		}
	}
	return item, nil
}

func indirectInterface(v reflect.Value) reflect.Value {
	if v.Kind() == reflect.Interface {
		return v.Elem()
	}
	return v
}

func describe(v reflect.Value) string {
	if !v.IsValid() {
		return "nil"
	}
	return v.Type().String()
}
