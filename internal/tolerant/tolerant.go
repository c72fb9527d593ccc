package tolerant

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrNotArray is a record that is neither an array nor nil.
var ErrNotArray = errors.New("tolerant: record is not an array")

// DecodeArray decodes an array into fields (pointers, in order): elements
// beyond the fields are skipped, fields beyond the elements keep their
// zero values. A nil record leaves every field as it is.
func DecodeArray(d *msgpack.Decoder, fields ...any) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotArray, err)
	}
	if n < 0 { // nil
		return nil
	}
	for i := 0; i < n; i++ {
		if i >= len(fields) {
			if err := d.Skip(); err != nil {
				return fmt.Errorf("tolerant: element %d: %w", i, err)
			}
			continue
		}
		if err := d.Decode(fields[i]); err != nil {
			return fmt.Errorf("tolerant: element %d: %w", i, err)
		}
	}
	return nil
}
