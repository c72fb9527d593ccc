package session

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		tok  Token
	}{
		{"empty", nil},
		{"one", Token{0: 1}},
		{"many", Token{0: 5, 3: 1 << 40, 15: 7, 65535: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.tok.Encode()
			got, err := Decode(s)
			if err != nil {
				t.Fatalf("Decode(%q): %v", s, err)
			}
			if len(tc.tok) == 0 {
				if len(got) != 0 {
					t.Fatalf("got %v, want empty", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.tok) {
				t.Fatalf("got %v, want %v", got, tc.tok)
			}
		})
	}
}

func TestMergeObserveCovers(t *testing.T) {
	a := Token{1: 10, 2: 5}
	b := Token{2: 7, 3: 1}
	m := a.Merge(b)
	want := Token{1: 10, 2: 7, 3: 1}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("Merge = %v, want %v", m, want)
	}
	if !m.Covers(a) || !m.Covers(b) || a.Covers(b) {
		t.Fatal("Covers wrong")
	}
	var z Token
	z.Observe(4, 9)
	z.Observe(4, 3)
	z.Observe(5, 0)
	if !reflect.DeepEqual(z, Token{4: 9}) {
		t.Fatalf("Observe = %v", z)
	}
	if a[1] != 10 || len(a) != 2 {
		t.Fatal("Merge mutated its receiver")
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Token{1: 2, 3: 4}.Encode()
	flip := []byte(good)
	flip[len(flip)-2] ^= 1
	cases := []struct{ name, in string }{
		{"no prefix", "abc"},
		{"bad base64", "s1.!!!"},
		{"truncated", "s1.AQ"},
		{"checksum", string(flip)},
		{"other version", "s2." + good[3:]},
		{"huge", "s1." + strings.Repeat("A", maxEncoded)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.in); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode(%q) err = %v, want ErrInvalid", tc.in, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("")
	f.Add(Token{1: 2, 3: 4}.Encode())
	f.Add(Token{0: 1 << 62}.Encode())
	f.Add("s1.AQEBAQAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Decode(s)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to a token that decodes equal.
		again, err := Decode(tok.Encode())
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(tok) != len(again) || !again.Covers(tok) || !tok.Covers(again) {
			t.Fatalf("round trip changed token: %v vs %v", tok, again)
		}
	})
}
