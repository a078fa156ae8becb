"""Conveyor's Pulumi program: one ComponentResource per concern, composed in `program.build`.

Modules that only describe or check the program (`emulator`, `policies`) import neither
`pulumi_aws` nor the program, so a plain process can use them cheaply.
"""
