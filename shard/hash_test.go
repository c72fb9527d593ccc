package shard

import (
	"errors"
	"strings"
	"testing"
)

func TestHashTag(t *testing.T) {
	cases := []struct{ key, tag string }{
		{"plain", "plain"},
		{"user:{42}:name", "42"},
		{"{a}{b}", "a"},
		{"{}x", "{}x"},
		{"x{", "x{"},
		{"x}{y}", "y"},
		{"{{a}}", "{a"},
	}
	for _, c := range cases {
		if got := hashTag(c.key); got != c.tag {
			t.Errorf("hashTag(%q) = %q, want %q", c.key, got, c.tag)
		}
	}
	if For("user:{42}:name", 16) != For("orders:{42}", 16) {
		t.Error("keys with the same tag land on different shards")
	}
}

func TestForSpreads(t *testing.T) {
	const n, keys = 16, 16000
	counts := make([]int, n)
	for i := 0; i < keys; i++ {
		counts[For("key-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+itoa(i), n)]++
	}
	for s, c := range counts {
		if c < keys/n/2 || c > keys/n*2 {
			t.Errorf("shard %d holds %d of %d keys", s, c, keys)
		}
	}
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

func TestValidateKey(t *testing.T) {
	cases := []struct {
		name string
		key  string
		ok   bool
	}{
		{"simple", "a", true},
		{"max", strings.Repeat("k", MaxKeyBytes), true},
		{"unicode", "ключ/日本", true},
		{"empty", "", false},
		{"too long", strings.Repeat("k", MaxKeyBytes+1), false},
		{"bad utf8", "a\xffb", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateKey(c.key)
			if c.ok != (err == nil) {
				t.Fatalf("ValidateKey: %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("error %v does not wrap ErrInvalidKey", err)
			}
		})
	}
}

func TestParseConsistency(t *testing.T) {
	for _, c := range []Consistency{Linearizable, Session, Stale} {
		got, err := ParseConsistency(c.String())
		if err != nil || got != c {
			t.Errorf("ParseConsistency(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseConsistency("strong"); !errors.Is(err, ErrBadConsistency) {
		t.Errorf("ParseConsistency(strong) err = %v", err)
	}
}

func TestTagFor(t *testing.T) {
	for _, n := range []int{1, 4, 16, 100} {
		for s := 0; s < n; s++ {
			tag := TagFor(s, n)
			if got := For(tag+"trg/x", n); got != s {
				t.Fatalf("TagFor(%d, %d) = %q maps to %d", s, n, tag, got)
			}
		}
	}
	if TagFor(5, 4) != "" {
		t.Fatal("out-of-range shard got a tag")
	}
}
