"""The one home of test helpers: model builders, factories, CLI and Ray-head runners, search
problems and Triton cases. Test modules import from here, never from each other."""
