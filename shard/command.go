package shard

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrBadCommand is returned for a Raft entry that does not decode.
var ErrBadCommand = errors.New("shard: bad command")

// Command operations.
const (
	opPut    uint8 = 1
	opDelete uint8 = 2
	// opNoop changes nothing; a new leader commits one so that its commit
	// index points at an entry the FSM applies (see group.watchLeadership).
	opNoop uint8 = 3
)

// Command preconditions.
const (
	condNone        uint8 = 0
	condIfMatch     uint8 = 1
	condIfNoneMatch uint8 = 2
)

// command is one replicated write, msgpack-encoded as an array.
type command struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Op       uint8
	Key      string
	Value    []byte
	Cond     uint8
	Version  uint64 // for condIfMatch
}

func newCommand(op uint8, key string, value []byte, c Cond) command {
	cmd := command{Op: op, Key: key, Value: value}
	switch {
	case c.IfMatch != nil:
		cmd.Cond, cmd.Version = condIfMatch, *c.IfMatch
	case c.IfNoneMatch:
		cmd.Cond = condIfNoneMatch
	}
	return cmd
}

func encodeCommand(c command) ([]byte, error) {
	b, err := msgpack.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("shard: encode command: %w", err)
	}
	return b, nil
}

// decodeCommand parses and validates a Raft entry's payload.
func decodeCommand(b []byte) (command, error) {
	var c command
	if err := msgpack.Unmarshal(b, &c); err != nil {
		return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	switch c.Op {
	case opPut, opDelete:
	case opNoop:
		if c.Key != "" || len(c.Value) != 0 || c.Cond != condNone {
			return command{}, fmt.Errorf("%w: no-op with arguments", ErrBadCommand)
		}
		return c, nil
	default:
		return command{}, fmt.Errorf("%w: unknown op %d", ErrBadCommand, c.Op)
	}
	if c.Cond > condIfNoneMatch {
		return command{}, fmt.Errorf("%w: unknown condition %d", ErrBadCommand, c.Cond)
	}
	if err := ValidateKey(c.Key); err != nil {
		return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return c, nil
}
