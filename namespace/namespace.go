package namespace

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Default is the namespace of insecure mode, of data written before
// namespaces existed, and of an admin request without X-Namespace.
const Default = "default"

// MaxLen is the longest namespace name.
const MaxLen = 63

// Overhead is the most bytes a namespace adds to a key (marker, name,
// separator): the store accepts keys this much longer than a user may
// send.
const Overhead = 1 + MaxLen + 1

// marker starts every stored key of a namespace other than Default.
const marker = 0xFF

// sep ends the namespace name in a stored key.
const sep = 0x00

// ErrInvalid is returned for a malformed namespace name.
var ErrInvalid = errors.New("namespace: invalid namespace")

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Validate checks a namespace name: 1-63 of a-z 0-9 _ -, starting with a
// letter or digit.
func Validate(ns string) error {
	if !nameRE.MatchString(ns) {
		return fmt.Errorf("%w: %q (want 1-63 of a-z 0-9 _ -, starting with a letter or digit)", ErrInvalid, ns)
	}
	return nil
}

// Key returns the stored key of user key k in namespace ns.
func Key(ns, k string) string {
	if ns == Default || ns == "" {
		return k
	}
	return qual(ns) + k
}

// qual is the stored prefix of namespace ns (not Default).
func qual(ns string) string {
	b := make([]byte, 0, len(ns)+2)
	b = append(b, marker)
	b = append(b, ns...)
	b = append(b, sep)
	return string(b)
}

// Prefix returns the stored prefix of user prefix p in namespace ns. For
// Default and an empty p it is "", which also matches other namespaces'
// keys: filter what it yields with Strip (or scan with Range).
func Prefix(ns, p string) string { return Key(ns, p) }

// Strip returns the user key of stored key k when k belongs to namespace
// ns; ok is false for a key of another namespace.
func Strip(ns, k string) (user string, ok bool) {
	if ns == Default || ns == "" {
		if len(k) > 0 && k[0] == marker {
			return "", false
		}
		return k, true
	}
	q := qual(ns)
	if !strings.HasPrefix(k, q) {
		return "", false
	}
	return k[len(q):], true
}

// Of returns the namespace a stored key belongs to.
func Of(k string) string {
	if len(k) == 0 || k[0] != marker {
		return Default
	}
	if i := strings.IndexByte(k, sep); i > 0 {
		return k[1:i]
	}
	return Default // malformed; never written by Key
}

// Range returns the stored bounds [lo, hi) of a scan of namespace ns for
// user prefix p and optional user bounds start (inclusive) and end
// (exclusive, "" = none). hi is "" for no bound only if the namespace's
// key space had none — which is never: Default ends at the marker, others
// at their qualifier's end. The user bounds are only narrowed: a start
// below the prefix or an end beyond it cannot leave the namespace.
func Range(ns, p, start, end string) (lo, hi string) {
	lo = Key(ns, p)
	if s := Key(ns, start); start != "" && s > lo {
		lo = s
	}
	if ns == Default || ns == "" {
		hi = string([]byte{marker})
	} else {
		hi = qual(ns)[:len(ns)+1] + string([]byte{sep + 1})
	}
	if p != "" {
		if pe := PrefixEnd(Key(ns, p)); pe != "" && pe < hi {
			hi = pe
		}
	}
	if end != "" {
		if e := Key(ns, end); e < hi {
			hi = e
		}
	}
	return lo, hi
}

// PrefixEnd is the smallest string greater than every string with prefix
// p ("" when there is none).
func PrefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xFF {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// ValidateKey checks a user key as the API accepts it: valid UTF-8 (so
// it cannot hold the marker) of 1 to maxBytes bytes.
func ValidateKey(k string, maxBytes int) error {
	switch {
	case len(k) == 0:
		return fmt.Errorf("%w: key is empty", ErrInvalidKey)
	case len(k) > maxBytes:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(k), maxBytes)
	case !utf8.ValidString(k):
		return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalidKey)
	}
	return nil
}

// ErrInvalidKey is returned by ValidateKey.
var ErrInvalidKey = errors.New("namespace: invalid key")

// Name returns the stored name of function or trigger name in ns.
func Name(ns, name string) string {
	if ns == Default || ns == "" {
		return name
	}
	return ns + ":" + name
}

// SplitName returns the namespace and the user name of a stored function
// or trigger name.
func SplitName(stored string) (ns, name string) {
	if i := strings.IndexByte(stored, ':'); i >= 0 {
		return stored[:i], stored[i+1:]
	}
	return Default, stored
}

// StripName returns the user name of a stored name when it belongs to ns.
func StripName(ns, stored string) (string, bool) {
	n, name := SplitName(stored)
	if n != ns && !(ns == "" && n == Default) {
		return "", false
	}
	return name, true
}

type ctxKey struct{}

// With returns ctx carrying namespace ns.
func With(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, ctxKey{}, ns)
}

// From returns the namespace ctx carries, Default when none.
func From(ctx context.Context) string {
	if ns, ok := ctx.Value(ctxKey{}).(string); ok && ns != "" {
		return ns
	}
	return Default
}

// HasPrefix reports whether stored key k lies under stored prefix p
// within p's namespace. It is strings.HasPrefix except for the empty
// prefix (Default's whole key space), which does not match another
// namespace's keys.
func HasPrefix(k, p string) bool {
	if p == "" {
		return len(k) == 0 || k[0] != marker
	}
	return strings.HasPrefix(k, p)
}

// ValidatePrefix checks a user prefix or scan bound as the API accepts
// it: valid UTF-8 (so it cannot hold the marker), possibly empty.
func ValidatePrefix(p string) error {
	if !utf8.ValidString(p) {
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidKey, p)
	}
	return nil
}

// ValidateStoredName checks the namespace part of a stored function or
// trigger name ("ns:name", or a Default name without ':'); the caller
// checks the name part.
func ValidateStoredName(stored string) (name string, err error) {
	ns, name := SplitName(stored)
	if strings.IndexByte(stored, ':') >= 0 {
		if ns == Default {
			return "", fmt.Errorf("%w: a name of namespace %s is not qualified", ErrInvalid, Default)
		}
		if err := Validate(ns); err != nil {
			return "", err
		}
	}
	return name, nil
}
