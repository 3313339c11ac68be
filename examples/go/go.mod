module example.invalid/locks/examples/go

go 1.19

require example.invalid/locks/crates/locks-ffi/go v0.0.0

replace example.invalid/locks/crates/locks-ffi/go => ../../crates/locks-ffi/go
