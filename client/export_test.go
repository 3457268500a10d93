package client

// NewWithLimit is New with maxMessage as the bound on the messages read, for tests
// of the bound without a message of DefaultMaxMessage bytes.
var NewWithLimit = newClient
