package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// maxQueryParams bounds the parameters of one request's query string; no
// route takes more than a handful.
const maxQueryParams = 64

// errBadParameter is a query string or parameter the server refuses: a
// malformed query string, too many parameters, an unknown or repeated
// parameter, or a value out of range (HTTP 400 bad_parameter).
var errBadParameter = errors.New("server: bad parameter")

// repeatable names the parameters a route may see more than once: a
// repeated consistency is refused by readOptions with its own code
// (bad_consistency), as docs/api.md defines.
var repeatable = []string{"consistency"}

// queryParams parses r's query string strictly, for a route that takes
// the parameters allowed (none when allowed is empty). Unlike
// r.URL.Query(), which drops the whole query on one bad %-escape (so a
// filter silently turns into "everything"), it fails with errBadParameter
// on a malformed query string, on more than maxQueryParams parameters, on
// a parameter the route does not take and on a parameter given more than
// once (except those in repeatable).
func queryParams(r *http.Request, allowed ...string) (url.Values, error) {
	return parseParams(r.URL.RawQuery, allowed)
}

func parseParams(raw string, allowed []string) (url.Values, error) {
	if raw == "" {
		return url.Values{}, nil
	}
	// Counted as url.ParseQuery counts them, before parsing anything.
	if n := strings.Count(raw, "&") + 1; n > maxQueryParams {
		return nil, fmt.Errorf("%w: %d query parameters, at most %d", errBadParameter, n, maxQueryParams)
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed query string: %v", errBadParameter, err)
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names) // the same error for the same query
	for _, name := range names {
		if !slices.Contains(allowed, name) {
			if len(allowed) == 0 {
				return nil, fmt.Errorf("%w: unknown parameter %q (this route takes no query parameters)", errBadParameter, name)
			}
			return nil, fmt.Errorf("%w: unknown parameter %q (this route takes %s)", errBadParameter, name, strings.Join(allowed, ", "))
		}
		if n := len(q[name]); n > 1 && !slices.Contains(repeatable, name) {
			return nil, fmt.Errorf("%w: parameter %q given %d times, at most once", errBadParameter, name, n)
		}
	}
	return q, nil
}

// scopeNode reports whether q asks for the receiving node's view only
// (scope=node, used between nodes); any other scope is refused.
func scopeNode(q url.Values) (bool, error) {
	v, ok := q["scope"]
	if !ok {
		return false, nil
	}
	if v[0] != "node" {
		return false, fmt.Errorf("%w: scope=%q (the only scope is node)", errBadParameter, v[0])
	}
	return true, nil
}
