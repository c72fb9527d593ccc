package scatter

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// objectFields returns the raw JSON of the top-level fields a and b
// (either may be "", and a missing field gives nil) of v, which must be a
// JSON object: ok is false when it is not. Like encoding/json, the last
// of duplicate keys wins. It allocates only for keys with escapes.
func objectFields(v []byte, a, b string) (ra, rb []byte, ok bool) {
	if !json.Valid(v) {
		return nil, nil, false
	}
	// v is valid JSON from here on, so the scan need not check syntax.
	i := skipWS(v, 0)
	if v[i] != '{' {
		return nil, nil, false
	}
	i++
	for {
		i = skipWS(v, i)
		switch v[i] {
		case '}':
			return ra, rb, true
		case ',':
			i = skipWS(v, i+1)
		}
		end, esc := stringEnd(v, i)
		key := v[i+1 : end]
		i = skipWS(v, end+1) // at ':'
		i = skipWS(v, i+1)
		start := i
		i = skipValue(v, i)
		val := v[start:i]
		if a == "" && b == "" {
			continue
		}
		k := unsafe.String(unsafe.SliceData(key), len(key))
		if esc || !utf8.Valid(key) { // encoding/json unescapes and replaces invalid UTF-8
			k = unescapeKey(v, end-len(key)-1, end)
		}
		if a != "" && k == a {
			ra = val
		}
		if b != "" && k == b {
			rb = val
		}
	}
}

// unescapeKey decodes the JSON string v[open:close+1].
func unescapeKey(v []byte, open, close int) string {
	var s string
	_ = json.Unmarshal(v[open:close+1], &s)
	return s
}

func skipWS(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index of the quote closing the string that opens
// at v[i], and whether the string has escapes.
func stringEnd(v []byte, i int) (int, bool) {
	esc := false
	for j := i + 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			esc = true
			j++
		case '"':
			return j, esc
		}
	}
	return len(v) - 1, esc
}

// skipValue returns the index just past the value starting at v[i].
func skipValue(v []byte, i int) int {
	switch v[i] {
	case '"':
		end, _ := stringEnd(v, i)
		return end + 1
	case '{', '[':
		depth := 0
		for j := i; j < len(v); j++ {
			switch v[j] {
			case '"':
				j, _ = stringEnd(v, j)
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(v)
	}
	for j := i; j < len(v); j++ {
		switch v[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j
		}
	}
	return len(v)
}

// number parses a JSON number; ok is false for anything else (strings,
// null, booleans, objects) and for numbers beyond float64's range.
func number(raw []byte) (float64, bool) {
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	x, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64)
	return x, err == nil
}

// canonicalAsIs reports whether raw is already the canonical JSON text of
// its value (what groupKey would return): a string of plain printable
// ASCII that json.Marshal writes unchanged, or an integer of at most 21
// digits.
func canonicalAsIs(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	switch c := raw[0]; {
	case c == '"':
		for _, c := range raw[1 : len(raw)-1] {
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
		}
		return true
	case c >= '1' && c <= '9' || c == '0' && len(raw) == 1:
		if len(raw) > 21 { // canonicalNumber writes longer ones with an exponent
			return false
		}
		for _, c := range raw {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	case c == 't' || c == 'f' || c == 'n': // true, false, null
		return true
	}
	return false
}
