package engine

import (
	"net/url"
	"strings"
)

// redacted stands in for a secret in anything printed.
const redacted = "xxxxx"

// secretParams are query parameters that carry secrets in go-redis URLs.
var secretParams = []string{"password", "sentinel_password"}

// Redact returns raw with its password, and any secret query parameter,
// replaced by xxxxx, for logs and errors. A URL it cannot parse is
// reduced to its scheme, since any part of it may be a password.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !isScheme(scheme) {
		return "(not a URL)"
	}
	if userinfo, after, ok := cutUserinfo(rest); ok {
		user, _, hasPass := strings.Cut(userinfo, ":")
		if hasPass {
			user += ":" + redacted
		}
		rest = user + "@" + after
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	path, query, hasQuery := strings.Cut(tail, "?")
	if hasQuery {
		q, err := url.ParseQuery(query)
		if err != nil {
			return scheme + "://(unparseable URL)"
		}
		for _, p := range secretParams {
			if q.Has(p) {
				q.Set(p, redacted)
			}
		}
		path += "?" + q.Encode()
	}
	return scheme + "://" + authority + path
}

// isScheme says whether s can be a URL's scheme, rather than, say, part
// of a password that holds "://".
func isScheme(s string) bool {
	return s != "" && strings.Trim(strings.ToLower(s), "abcdefghijklmnopqrstuvwxyz0123456789+-.") == ""
}

// cutUserinfo splits what follows "://" at its last '@'. A password with
// an unescaped '/', '?' or '@' is still all on the left, so it is never
// shown; an '@' in the query hides more than needed, never less.
func cutUserinfo(rest string) (userinfo, after string, ok bool) {
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", rest, false
	}
	return rest[:at], rest[at+1:], true
}

// redactErr returns err with every secret in its message replaced by
// xxxxx. It still matches what err matches (errors.Is, errors.As).
func redactErr(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, s := range secrets {
		if s != "" {
			clean = strings.ReplaceAll(clean, s, redacted)
		}
	}
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
