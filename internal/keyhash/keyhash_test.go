package keyhash

import "testing"

func TestTag(t *testing.T) {
	for _, tc := range []struct{ key, tag string }{
		{"plain", "plain"},
		{"orders/{ada}/1", "ada"},
		{"{}empty", "{}empty"},
		{"a{b}c{d}", "b"},
		{"open{only", "open{only"},
		{"}{x}", "x"},
	} {
		if got := Tag(tc.key); got != tc.tag {
			t.Errorf("Tag(%q) = %q; want %q", tc.key, got, tc.tag)
		}
	}
}

// TestForStable pins the mapping: data directories and clients depend on
// it, so it must never change.
func TestForStable(t *testing.T) {
	for _, tc := range []struct {
		key  string
		n    int
		want int
	}{
		{"greeting", 16, 6},
		{"ada", 16, 11},
		{"orders/{ada}/1", 16, 11},
		{"user/bob/visits", 64, 31},
		{"k12345", 1024, 545},
	} {
		if got := For(tc.key, tc.n); got != tc.want {
			t.Errorf("For(%q, %d) = %d; want %d", tc.key, tc.n, got, tc.want)
		}
	}
}
