package namespace_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"lambdadb/namespace"
)

func TestKeyAndStrip(t *testing.T) {
	for _, tc := range []struct {
		ns, key string
		stored  string
	}{
		{"default", "a/1", "a/1"},
		{"", "a/1", "a/1"},
		{"shop", "a/1", "\xffshop\x00a/1"},
		{"s", "{tag}x", "\xffs\x00{tag}x"},
	} {
		got := namespace.Key(tc.ns, tc.key)
		if got != tc.stored {
			t.Errorf("Key(%q, %q) = %q, want %q", tc.ns, tc.key, got, tc.stored)
		}
		if u, ok := namespace.Strip(tc.ns, got); !ok || u != tc.key {
			t.Errorf("Strip(%q, %q) = %q, %v", tc.ns, got, u, ok)
		}
		ns := tc.ns
		if ns == "" {
			ns = namespace.Default
		}
		if o := namespace.Of(got); o != ns {
			t.Errorf("Of(%q) = %q, want %q", got, o, ns)
		}
	}
	// A key of one namespace is not another's.
	for _, tc := range []struct{ ns, stored string }{
		{"default", "\xffshop\x00a"},
		{"shop", "a"},
		{"shop", "\xffshopx\x00a"},
		{"sho", "\xffshop\x00a"},
	} {
		if u, ok := namespace.Strip(tc.ns, tc.stored); ok {
			t.Errorf("Strip(%q, %q) = %q, true: a key of another namespace", tc.ns, tc.stored, u)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, ns := range []string{"default", "a", "shop-1", "x_y", strings.Repeat("a", 63)} {
		if err := namespace.Validate(ns); err != nil {
			t.Errorf("Validate(%q): %v", ns, err)
		}
	}
	for _, ns := range []string{"", "A", "-a", "a:b", "a/b", "a\x00", strings.Repeat("a", 64), "é"} {
		if err := namespace.Validate(ns); !errors.Is(err, namespace.ErrInvalid) {
			t.Errorf("Validate(%q) = %v, want ErrInvalid", ns, err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ ns, name, stored string }{
		{"default", "f", "f"},
		{"shop", "f", "shop:f"},
	} {
		s := namespace.Name(tc.ns, tc.name)
		if s != tc.stored {
			t.Errorf("Name(%q, %q) = %q", tc.ns, tc.name, s)
		}
		ns, name := namespace.SplitName(s)
		if ns != tc.ns || name != tc.name {
			t.Errorf("SplitName(%q) = %q, %q", s, ns, name)
		}
		if n, ok := namespace.StripName(tc.ns, s); !ok || n != tc.name {
			t.Errorf("StripName(%q, %q) = %q, %v", tc.ns, s, n, ok)
		}
	}
	if _, ok := namespace.StripName("default", "shop:f"); ok {
		t.Error("default owns shop:f")
	}
	if _, ok := namespace.StripName("shop", "f"); ok {
		t.Error("shop owns default's f")
	}
}

func TestContext(t *testing.T) {
	if ns := namespace.From(context.Background()); ns != namespace.Default {
		t.Fatalf("From(empty) = %q", ns)
	}
	if ns := namespace.From(namespace.With(context.Background(), "shop")); ns != "shop" {
		t.Fatalf("From = %q", ns)
	}
}

// inRange reports whether stored key k is inside the scan bounds.
func inRange(k, lo, hi string) bool { return k >= lo && (hi == "" || k < hi) }

// FuzzRangeConfined: whatever prefix and bounds a user sends, every stored
// key a scan of Range's bounds can reach belongs to the namespace and
// starts with the prefix; and every key of the namespace under the prefix
// within the user's bounds is reachable.
func FuzzRangeConfined(f *testing.F) {
	for _, s := range [][5]string{
		{"shop", "", "", "", "a"},
		{"shop", "a/", "", "", "a/1"},
		{"shop", "a/", "..", "", "b"},
		{"default", "", "", "", "x"},
		{"default", "", "", "\xff", "\xffshop\x00a"},
		{"s", "a", "0", "zz", "a\xff"},
		{"shop", "", "\xffother\x00", "", "k"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	others := []string{"default", "shop", "sho", "shopx", "other", "s"}
	f.Fuzz(func(t *testing.T, ns, p, start, end, k string) {
		if namespace.Validate(ns) != nil {
			return
		}
		lo, hi := namespace.Range(ns, p, start, end)
		// Another namespace's key with the same user bytes, and the raw bytes
		// themselves, must be outside unless they are this namespace's.
		for _, o := range others {
			sk := namespace.Key(o, k)
			if !inRange(sk, lo, hi) {
				continue
			}
			u, ok := namespace.Strip(ns, sk)
			if !ok {
				t.Fatalf("Range(%q, %q, %q, %q) = [%q, %q) reaches %q of namespace %q", ns, p, start, end, lo, hi, sk, o)
			}
			if !strings.HasPrefix(u, p) {
				t.Fatalf("Range(%q, %q, ...) reaches %q outside the prefix", ns, p, u)
			}
		}
		if inRange(k, lo, hi) {
			if _, ok := namespace.Strip(ns, k); !ok {
				t.Fatalf("Range(%q, %q, %q, %q) = [%q, %q) reaches raw %q", ns, p, start, end, lo, hi, k)
			}
		}
		// Completeness: a user key under the prefix within the bounds is in.
		if utf8.ValidString(k) && utf8.ValidString(p) && utf8.ValidString(start) && utf8.ValidString(end) && strings.HasPrefix(k, p) && k >= start && (end == "" || k < end) {
			if sk := namespace.Key(ns, k); !inRange(sk, lo, hi) {
				t.Fatalf("Range(%q, %q, %q, %q) = [%q, %q) misses %q", ns, p, start, end, lo, hi, sk)
			}
		}
	})
}

func TestHasPrefix(t *testing.T) {
	for _, tc := range []struct {
		k, p string
		want bool
	}{
		{"a", "", true},
		{"", "", true},
		{"\xffshop\x00a", "", false},
		{"\xffshop\x00a", namespace.Prefix("shop", ""), true},
		{"\xffshop\x00a", namespace.Prefix("shop", "a"), true},
		{"\xffshop\x00a", namespace.Prefix("blog", ""), false},
		{"\xffshopx\x00a", namespace.Prefix("shop", ""), false},
		{"ab", "a", true},
	} {
		if got := namespace.HasPrefix(tc.k, tc.p); got != tc.want {
			t.Errorf("HasPrefix(%q, %q) = %v", tc.k, tc.p, got)
		}
	}
}

func TestValidateNames(t *testing.T) {
	for _, s := range []string{"\xff", "a\xffb", "\xffshop\x00"} {
		if namespace.ValidatePrefix(s) == nil {
			t.Errorf("ValidatePrefix(%q) accepted", s)
		}
	}
	if namespace.ValidatePrefix("") != nil || namespace.ValidatePrefix("ü/") != nil {
		t.Error("ValidatePrefix refused UTF-8")
	}
	for stored, name := range map[string]string{"f": "f", "shop:f": "f", "shop:a:b": "a:b"} {
		if got, err := namespace.ValidateStoredName(stored); err != nil || got != name {
			t.Errorf("ValidateStoredName(%q) = %q, %v", stored, got, err)
		}
	}
	for _, stored := range []string{"default:f", ":f", "Shop:f", "a b:f"} {
		if _, err := namespace.ValidateStoredName(stored); err == nil {
			t.Errorf("ValidateStoredName(%q) accepted", stored)
		}
	}
}
