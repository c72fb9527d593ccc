// Command indexer is a lambdadb trigger handler: for each change it
// receives, it writes idx/<key> = the new value (and deletes idx/<key>
// when the key is deleted). Bind it with a trigger on a prefix that does
// not cover idx/, or it would index its own writes.
package main

import "lambdadb/sdk/fn"

func init() {
	fn.OnChanges(func(c *fn.Ctx, batch []fn.Change) error {
		for _, ch := range batch {
			var err error
			if ch.Op == "delete" {
				err = c.Delete("idx/" + ch.Key)
			} else {
				err = c.Put("idx/"+ch.Key, ch.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func main() {}
