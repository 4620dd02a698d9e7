"""Experiment configs, one file per experiment: `get_config("variant[,field=value...]")`; installed with the
package so notebooks and other code can import them."""
