package shard

import (
	"strings"
	"unicode/utf8"

	"lambdadb/internal/keyhash"
	"lambdadb/namespace"
)

// For returns the shard holding key among n shards. If key contains "{tag}"
// with a non-empty tag (the first '{' and the first '}' after it, as in Redis
// Cluster), only the tag is hashed. The mapping itself lives in
// internal/keyhash, shared with the Go client.
func For(key string, n int) int { return keyhash.For(key, n) }

func hashTag(key string) string { return keyhash.Tag(key) }

// ValidateKey reports whether key is acceptable: valid UTF-8 of 1 to
// MaxKeyBytes bytes. The error wraps ErrInvalidKey.
func ValidateKey(key string) error {
	switch {
	case len(key) == 0:
		return errorf(ErrInvalidKey, "key is empty")
	case len(key) > MaxKeyBytes:
		return errorf(ErrInvalidKey, "key is %d bytes, the limit is %d", len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return errorf(ErrInvalidKey, "key is not valid UTF-8")
	}
	return nil
}

// validateStoredKey checks a key as the node stores it: a user key
// (ValidateKey) or a user key qualified by its namespace (namespace.Key).
func validateStoredKey(key string) error {
	if len(key) == 0 || key[0] != 0xFF {
		return ValidateKey(key)
	}
	i := strings.IndexByte(key, 0)
	if i < 0 || namespace.Validate(key[1:i]) != nil {
		return errorf(ErrInvalidKey, "key has a malformed namespace qualifier")
	}
	return ValidateKey(key[i+1:])
}

// TagFor returns a hash tag ("{...}", to prefix keys with) that For maps
// to shard s among n shards, so a caller can place records on a chosen
// shard — a trigger's checkpoint next to the shard it tracks, say. It is
// deterministic: every node computes the same tag.
func TagFor(s, n int) string {
	if n <= 0 || s < 0 || s >= n {
		return ""
	}
	for i := 0; ; i++ {
		tag := "{s" + decimal(s) + "." + decimal(i) + "}"
		if For(tag, n) == s {
			return tag
		}
	}
}

func decimal(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	p := len(b)
	for ; i > 0; i /= 10 {
		p--
		b[p] = byte('0' + i%10)
	}
	return string(b[p:])
}
