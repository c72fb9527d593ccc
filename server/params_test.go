package server

import (
	"errors"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzParseParams checks parseParams against url.ParseQuery: it accepts
// exactly the well-formed query strings of at most maxQueryParams
// parameters that name only allowed parameters, each once (consistency
// may repeat: readOptions refuses that with its own code), and then
// returns what url.ParseQuery does. Every refusal is errBadParameter.
func FuzzParseParams(f *testing.F) {
	for _, s := range []string{
		"", "prefix=a", "prefix=%zz", "prefix=a&limit=1&limit=2", "consistency=stale&consistency=stale",
		"prefix=a;limit=1", "colour=blue", "=x", "&&&", "prefix", "prefix=a%26b&start=%2F", "a=1&" + strings.Repeat("x=1&", 70),
		"limit=%", "prefix=%e2%82%ac", "prefix=+&end=%20",
	} {
		f.Add(s)
	}
	allowed := []string{"prefix", "start", "end", "limit", "consistency"}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseParams(raw, allowed)
		want, perr := url.ParseQuery(raw)
		n := 0
		if raw != "" {
			n = strings.Count(raw, "&") + 1
		}
		ok := perr == nil && n <= maxQueryParams
		if ok {
			for name, vs := range want {
				if !slices.Contains(allowed, name) || (len(vs) > 1 && name != "consistency") {
					ok = false
				}
			}
		}
		if err != nil {
			if !errors.Is(err, errBadParameter) {
				t.Fatalf("parseParams(%q): %v, not errBadParameter", raw, err)
			}
			if ok {
				t.Fatalf("parseParams(%q) refused a good query: %v", raw, err)
			}
			return
		}
		if !ok {
			t.Fatalf("parseParams(%q) accepted %v (ParseQuery: %v, %d parameters)", raw, q, perr, n)
		}
		if len(want) == 0 && len(q) == 0 {
			return
		}
		if !reflect.DeepEqual(q, want) {
			t.Fatalf("parseParams(%q) = %v, url.ParseQuery = %v", raw, q, want)
		}
	})
}

func TestParseParamsNoneAllowed(t *testing.T) {
	if _, err := parseParams("", nil); err != nil {
		t.Fatal(err)
	}
	_, err := parseParams("x=1", nil)
	if !errors.Is(err, errBadParameter) || !strings.Contains(err.Error(), "takes no query parameters") {
		t.Fatalf("err %v", err)
	}
}
