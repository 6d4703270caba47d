"""`taskmasterd --import-supervisord FILE [-o DIR]`: a supervisord
configuration (with its [include] files) -> Taskmaster's YAML files,
and a report of what could not be carried over (docs/migrating.md).

ini reads the INI tree as supervisord does; expand and envstr translate
values; programs maps one [program:x]; ordering turns priorities into
`after:`; others handles the other sections; convert lays the files out;
run writes them and prints the report.
"""
