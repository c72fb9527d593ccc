package changefeed

import (
	"errors"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []Cursor{{}, {0: 5}, {0: 1, 3: 1 << 40, 15: 7}} {
		s := c.Encode()
		got, err := DecodeCursor(s, 16)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if len(got) != len(c) {
			t.Fatalf("%v -> %v", c, got)
		}
		for k, v := range c {
			if got[k] != v {
				t.Fatalf("%v -> %v", c, got)
			}
		}
	}
}

func TestCursorRejects(t *testing.T) {
	good := Cursor{1: 9, 2: 10}.Encode()
	for name, s := range map[string]string{
		"empty":        "",
		"no prefix":    good[3:],
		"bad base64":   "c1.!!!",
		"flipped bit":  good[:len(good)-2] + "A" + good[len(good)-1:],
		"other shards": Cursor{20: 1}.Encode(),
		"session":      "s1.AQEFBKrRHbU",
	} {
		if _, err := DecodeCursor(s, 16); !errors.Is(err, ErrBadCursor) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(Cursor{1: 9, 2: 10}.Encode())
	f.Add("c1.AA")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := DecodeCursor(s, 16)
		if err != nil {
			return
		}
		again, err := DecodeCursor(c.Encode(), 16)
		if err != nil || len(again) != len(c) {
			t.Fatalf("re-encoding %v: %v", c, err)
		}
	})
}
