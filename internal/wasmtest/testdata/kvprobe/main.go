// Command kvprobe is a test handler that touches whatever keys it is told
// to, for tests of what a handler can reach.
//
// Handle takes a JSON list of operations {"op":"get|put|cas|delete|scan",
// "key","value","prefix", or "key_hex","prefix_hex"} and answers a JSON list of outcomes
// {"found","value","keys","err"} (scan: every key under the prefix, all
// pages). OnChanges writes seen/<key> = the value for every change of a
// key not under seen/. Leaf lists the keys its scan of the query's prefix
// returns; Combine merges the lists.
package main

import (
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"

	"lambdadb/sdk/fn"
)

type op struct {
	Op     string `json:"op"`
	Key    string `json:"key"`
	Value  string `json:"value"`
	Prefix string `json:"prefix"`
	// KeyHex and PrefixHex, when set, give the key or prefix as hex, for
	// bytes JSON cannot carry (0xFF).
	KeyHex    string `json:"key_hex"`
	PrefixHex string `json:"prefix_hex"`
}

type outcome struct {
	Found bool     `json:"found,omitempty"`
	Value string   `json:"value,omitempty"`
	Keys  []string `json:"keys,omitempty"`
	Err   string   `json:"err,omitempty"`
}

func scan(c *fn.Ctx, prefix string) ([]string, error) {
	keys := []string{}
	err := c.Scan(prefix, func(key string, _ []byte) bool {
		keys = append(keys, key)
		return true
	})
	return keys, err
}

func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		var ops []op
		if err := json.Unmarshal(req, &ops); err != nil {
			return nil, err
		}
		out := make([]outcome, len(ops))
		for i, o := range ops {
			if o.KeyHex != "" {
				b, _ := hex.DecodeString(o.KeyHex)
				o.Key = string(b)
			}
			if o.PrefixHex != "" {
				b, _ := hex.DecodeString(o.PrefixHex)
				o.Prefix = string(b)
			}
			var err error
			switch o.Op {
			case "get":
				var v []byte
				v, out[i].Found, err = c.Get(o.Key)
				out[i].Value = string(v)
			case "put":
				err = c.Put(o.Key, []byte(o.Value))
			case "cas":
				out[i].Found, err = c.CompareAndPut(o.Key, []byte(o.Value), 0)
			case "delete":
				err = c.Delete(o.Key)
			case "scan":
				out[i].Keys, err = scan(c, o.Prefix)
			}
			if err != nil {
				out[i].Err = err.Error()
			}
		}
		return json.Marshal(out)
	})
	fn.OnChanges(func(c *fn.Ctx, batch []fn.Change) error {
		for _, ch := range batch {
			if strings.HasPrefix(ch.Key, "seen/") {
				continue
			}
			if err := c.Put("seen/"+ch.Key, ch.Value); err != nil {
				return err
			}
		}
		return nil
	})
	fn.Leaf(func(c *fn.Ctx, prefix string) ([]byte, error) {
		keys, err := scan(c, prefix)
		if err != nil {
			return nil, err
		}
		return json.Marshal(append([]string{"prefix=" + prefix}, keys...))
	})
	fn.Combine(func(parts [][]byte) ([]byte, error) {
		all := []string{}
		seen := map[string]bool{}
		for _, p := range parts {
			var keys []string
			if err := json.Unmarshal(p, &keys); err != nil {
				return nil, err
			}
			for _, k := range keys {
				if !seen[k] {
					seen[k] = true
					all = append(all, k)
				}
			}
		}
		sort.Strings(all)
		return json.Marshal(all)
	})
}

func main() {}
