package auth

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Actions a scope grants.
const (
	KVRead       = "kv:read"
	KVWrite      = "kv:write"
	FeedRead     = "feed:read"
	Query        = "query"
	FnDeploy     = "fn:deploy"
	FnInvoke     = "fn:invoke"
	FnLogs       = "fn:logs"
	TriggerAdmin = "trigger:admin"
	Metrics      = "metrics"
	Admin        = "admin"
)

// prefixed are the actions whose scopes name a key prefix.
var prefixed = map[string]bool{KVRead: true, KVWrite: true, FeedRead: true}

// plain are the actions whose scopes take no argument.
var plain = map[string]bool{Query: true, FnDeploy: true, FnInvoke: true, FnLogs: true, TriggerAdmin: true, Metrics: true, Admin: true}

// Scope is one grant: an action and, for kv and feed actions, the key
// prefix it covers within the namespace ("*" = all of it).
type Scope struct {
	Action string
	Prefix string // "" for actions without one; "*" for the whole namespace
}

func (s Scope) String() string {
	if prefixed[s.Action] {
		return s.Action + ":" + s.Prefix
	}
	return s.Action
}

// ParseScope parses "kv:read:<prefix>", "query", ... The error wraps
// ErrInvalid.
func ParseScope(text string) (Scope, error) {
	if plain[text] {
		return Scope{Action: text}, nil
	}
	for a := range prefixed {
		if p, ok := strings.CutPrefix(text, a+":"); ok {
			if p == "" {
				return Scope{}, fmt.Errorf("%w: scope %q names no prefix (use %s:* for the whole namespace)", ErrInvalid, text, a)
			}
			if !utf8.ValidString(p) || len(p) > 1024 {
				return Scope{}, fmt.Errorf("%w: scope %q: the prefix must be UTF-8 of at most 1024 bytes", ErrInvalid, text)
			}
			return Scope{Action: a, Prefix: p}, nil
		}
		if text == a {
			return Scope{}, fmt.Errorf("%w: scope %q names no prefix (use %s:* for the whole namespace)", ErrInvalid, text, a)
		}
	}
	return Scope{}, fmt.Errorf("%w: unknown scope %q (want kv:read:P, kv:write:P, feed:read:P, query, fn:deploy, fn:invoke, fn:logs, trigger:admin, metrics or admin)", ErrInvalid, text)
}

// ParseScopes parses a list of scopes; it must not be empty.
func ParseScopes(texts []string) ([]Scope, error) {
	if len(texts) == 0 {
		return nil, fmt.Errorf("%w: a token needs at least one scope", ErrInvalid)
	}
	out := make([]Scope, 0, len(texts))
	for _, t := range texts {
		s, err := ParseScope(t)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Principal is who a request acts as: a token's accessor, namespace and
// scopes.
type Principal struct {
	Accessor  string
	Namespace string
	Scopes    []Scope
}

// IsAdmin reports whether the principal holds the admin scope.
func (p *Principal) IsAdmin() bool { return p.has(Admin) }

func (p *Principal) has(action string) bool {
	for _, s := range p.Scopes {
		if s.Action == action {
			return true
		}
	}
	return false
}

// Allows reports whether the principal may perform action. For kv and
// feed actions, key is a key or the prefix of a scan, feed or query: the
// grant must cover every key starting with it (its prefix is a prefix of
// key). An admin may do everything.
func (p *Principal) Allows(action, key string) bool {
	if p.IsAdmin() {
		return true
	}
	for _, s := range p.Scopes {
		if s.Action != action {
			continue
		}
		if !prefixed[action] || s.Prefix == "*" || strings.HasPrefix(key, s.Prefix) {
			return true
		}
	}
	return false
}

// AllowsAny reports whether the principal holds any of the actions (on
// any prefix).
func (p *Principal) AllowsAny(actions ...string) bool {
	if p.IsAdmin() {
		return true
	}
	for _, a := range actions {
		if p.has(a) {
			return true
		}
	}
	return false
}
