/* blas.h — the one place in core/math that includes the CBLAS and LAPACKE
 * headers. Every math module includes this file instead of <cblas.h>.
 * Modules may append declarations they need below; do not rewrite it.
 */
#ifndef SX_MATH_BLAS_H
#define SX_MATH_BLAS_H

#include <cblas.h>
#include <lapacke.h>

#endif
