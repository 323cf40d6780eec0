module unsloth-recipes/rendertemplate

go 1.19
