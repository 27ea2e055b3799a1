// Package secrettest checks that what a program printed holds no part of
// a secret it was given.
package secrettest

import (
	"net/url"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
)

// minPart is the shortest run of a secret's letters and digits that counts
// as a leak: shorter runs turn up in ordinary text by chance.
const minPart = 4

// Parts returns what of secret must never be printed: the whole of it, as
// is and percent-encoded, and every run of minPart or more letters and
// digits between its other characters (a parser that stops at a '#' or a
// '%' quotes such a run).
func Parts(secret string) []string {
	parts := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	runs := strings.FieldsFunc(secret, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	for _, r := range runs {
		if len(r) >= minPart {
			parts = append(parts, r)
		}
	}
	return parts
}

// T is what AssertNone needs of a *testing.T.
type T interface {
	Helper()
	Errorf(format string, args ...any)
}

var _ T = (*testing.T)(nil)

// AssertNone fails t if out holds any of secret's Parts, and says whether
// it held none; what names the output in the failure.
func AssertNone(t T, what, out, secret string) bool {
	t.Helper()
	ok := true
	for _, p := range Parts(secret) {
		ok = assert.NotContains(t, out, p, "%s printed (part of) a secret:\n%s", what, out) && ok
	}
	return ok
}
