/* A/B test statistics against SciPy 1.10 / statsmodels 0.13 figures from
 * tests/ref/abtest_ref.py abtest (pasted below), and the call-back rates of
 * /work/shared/data/resume_names_callback_experiment.csv counted here.
 * Tolerances, per figure: statistics, p-values and sample sizes 1e-9
 * relative; intervals 1e-9 absolute (proportions) or 1e-7 relative to
 * max(1, |bound|) (t intervals: SciPy 1.10's t quantile is itself only good
 * to ~1e-8); mSPRT Lambda 1e-8 relative and its bounds 1e-9 absolute;
 * Bayesian probabilities and losses 1e-9 absolute (the references are
 * scipy.integrate.quad of the defining integrals). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/math/abtest.h"
#include "core/sx.h"

struct ref_prop {
	double na, xa, nb, xb, alpha, alt, pa, pb, diff, rel, z, p, se, lo, hi, rlo, rhi;
};
struct ref_welch {
	double na, ma, va, nb, mb, vb, alpha, alt, d, rel, t, df, p, se, lo, hi, rlo, rhi;
};
struct ref_welch_raw {
	double na, ma, va, nb, mb, vb, t, p, lo, hi;
};
struct ref_chi2_ind {
	double k, n[4], x[4], yates, chi2, df, p;
};
struct ref_srm {
	double k, c[4], w[4], chi2, p, flag;
};
struct ref_plan {
	double base, mde, rel, alpha, power, sides, variants, n;
};
struct ref_plan_mean {
	double base, mde, rel, alpha, power, sides, variants, sd, n;
};
struct ref_msprt {
	double na, ma, va, nb, mb, vb, lambda, p, lo, hi;
};
struct ref_msprt_prop {
	double na, xa, nb, xb, lambda, p;
};
struct ref_bayes {
	double a0, b0, na, xa, nb, xb, prob, loss_choose, loss_keep;
};
struct ref_normal_post {
	double na, ma, va, nb, mb, vb, prob, loss_choose, loss_keep;
};
struct ref_cuped_sums {
	double n, sx, sy, sxx, syy, sxy;
};
struct ref_cuped {
	double i, ma, va, mb, vb, t, p, lo, hi;
};

/* BEGIN GENERATED: /usr/bin/python3 tests/ref/abtest_ref.py abtest */
/* resume_names_callback_experiment.csv, call-back by ethnicity: control = cauc n=2435 x=235, treatment = afam n=2435 x=157 */
static const struct ref_prop prop_ref[] = {
	{1000, 100, 1000, 130, 0.050000000000000003, 0, 0.10000000000000001, 0.13, 0.029999999999999999, 0.30000000000000004, 2.1027406056221141, 0.035488450466474711, 0.014251315728731857, 0.0020679344393763587, 0.057932065560623636, -0.019179397713587121, 0.61917939771358721},
	{20000, 1000, 21000, 1120, 0.050000000000000003, 0, 0.050000000000000003, 0.053333333333333337, 0.003333333333333334, 0.066666666666666652, 1.5235764819914592, 0.12761454175886416, 0.002186145650278774, -0.00095143340617196044, 0.0076181000728386284, -0.021913775201397034, 0.15524710853473034},
	{20000, 1000, 21000, 1120, 0.050000000000000003, 1, 0.050000000000000003, 0.053333333333333337, 0.003333333333333334, 0.066666666666666652, 1.5235764819914592, 0.063807270879432082, 0.002186145650278774, -0.00026255626857189362, INFINITY, -0.0076723835571774063, INFINITY},
	{20000, 1000, 21000, 1120, 0.01, -1, 0.050000000000000003, 0.053333333333333337, 0.003333333333333334, 0.066666666666666652, 1.5235764819914592, 0.93619272912056795, 0.002186145650278774, -INFINITY, 0.008419068619202991, -INFINITY, 0.17180580404205392},
	{50, 3, 60, 12, 0.10000000000000001, 0, 0.059999999999999998, 0.20000000000000001, 0.14000000000000001, 2.3333333333333335, 2.13048054870751, 0.033131960016178047, 0.061600865794781377, 0.038675592474102946, 0.24132440752589707, -1.0465195769379894, 5.7131862436046568},
	{1000000, 31000, 1000000, 30500, 0.050000000000000003, 0, 0.031, 0.030499999999999999, -0.00050000000000000044, -0.016129032258064502, -2.0479273291627336, 0.040567120561358187, 0.00024414903235523994, -0.00097852331027657529, -2.1476689723425653e-05, -0.031440308360405358, -0.00081775615572364513},
	{400, 40, 400, 40, 0.050000000000000003, 0, 0.10000000000000001, 0.10000000000000001, 0, 0, 0, 1, 0.021213203435596427, -0.041577114730490347, 0.041577114730490347, -0.41577114730490344, 0.41577114730490344},
	{2435, 235, 2435, 157, 0.050000000000000003, 0, 0.096509240246406572, 0.064476386036960986, -0.032032854209445585, -0.33191489361702131, -4.1084121524343464, 3.9838868375850767e-05, 0.0077833705866767544, -0.047287980237660419, -0.016777728181230751, -0.46156355466992627, -0.20226623256411633},
};
static const struct ref_welch welch_ref[] = {
	{100, 10, 4, 120, 10.800000000000001, 9, 0.050000000000000003, 0, 0.80000000000000071, 0.080000000000000071, 2.3590712984783564, 208.49583486668226, 0.01924502428035561, 0.33911649915626341, 0.13146328399723917, 1.4685367160027623, 0.011238853401726312, 0.14876114659827383},
	{8, 3.2000000000000002, 1.1000000000000001, 5, 4.9000000000000004, 6.2999999999999998, 0.050000000000000003, 0, 1.7000000000000002, 0.53125, 1.4380467770885663, 4.8873921077503661, 0.21123285781876483, 1.1821590417536889, -1.360017106272708, 4.7600171062727084, -0.48630077976346753, 1.5488007797634675},
	{8, 3.2000000000000002, 1.1000000000000001, 5, 4.9000000000000004, 6.2999999999999998, 0.10000000000000001, 1, 1.7000000000000002, 0.53125, 1.4380467770885663, 4.8873921077503661, 0.10561642890938241, 1.1821590417536889, -0.050786042670414533, INFINITY, -0.050940765949106348, INFINITY},
	{8, 3.2000000000000002, 1.1000000000000001, 5, 4.9000000000000004, 6.2999999999999998, 0.10000000000000001, -1, 1.7000000000000002, 0.53125, 1.4380467770885663, 4.8873921077503661, 0.89438357109061761, 1.1821590417536889, -INFINITY, 3.4507860426704147, -INFINITY, 1.1134407659491063},
	{50000, 52.100000000000001, 400, 48000, 52, 380, 0.050000000000000003, 0, -0.10000000000000142, -0.0019193857965451588, -0.79263626671312382, 97975.434770099368, 0.42799169179812147, 0.12616127245183709, -0.34727460501906837, 0.1472746050190655, -0.0066609629340915301, 0.0028221913410012124},
	{2, 1, 0.5, 3, 1.5, 0.25, 0.050000000000000003, 0, 0.5, 0.5, 0.86602540378443849, 1.6842105263157894, 0.49209629563951041, 0.57735026918962573, -2.4884987248052806, 3.4884987248052806, -3.6598141745834516, 4.6598141745834516},
};
/* Welch from raw data: scipy.stats.ttest_ind, CI from statsmodels CompareMeans */
static const struct ref_welch_raw welch_raw_ref[] = {
	{57, 9.2636354190425294, 6.8909538538322783, 83, 10.428043444132259, 20.545300365382101, 1.9183554143050732, 0.057182944870240893, -0.036046078885763499, 2.3648621290652221},
};
static const struct ref_chi2_ind chi2_ind_ref[] = {
	{2, {1000, 1000, 0, 0}, {100, 130, 0, 0}, 0, 4.421518054532056, 1, 0.035488450466474628},
	{2, {1000, 1000, 0, 0}, {100, 130, 0, 0}, 1, 4.1316629820682875, 1, 0.042087971767175741},
	{4, {1000, 1100, 950, 1200}, {100, 130, 90, 150}, 0, 6.7455452918778764, 3, 0.080465869342260826},
	{4, {1000, 1100, 950, 1200}, {100, 130, 90, 150}, 1, 6.7455452918778764, 3, 0.080465869342260826},
	{3, {30, 40, 35, 0}, {3, 12, 9, 0}, 0, 4.1319444444444455, 2, 0.12669505492364355},
	{3, {30, 40, 35, 0}, {3, 12, 9, 0}, 1, 4.1319444444444455, 2, 0.12669505492364355},
	{2, {2435, 2435, 0, 0}, {235, 157, 0, 0}, 0, 16.879050414270221, 1, 3.983886837585076e-05},
};
static const double holm_in[][8] = {
	{0.01, 0.040000000000000001, 0.029999999999999999, 0.0050000000000000001, 0, 0, 0, 0},
	{0.5, 0.20000000000000001, 0.90000000000000002, 0.01, 0.01, 0.049000000000000002, 9.9999999999999998e-13, 0},
	{0.29999999999999999, 0, 0, 0, 0, 0, 0, 0},
	{0.02, 0.02, 0.02, 0, 0, 0, 0, 0},
};
static const size_t holm_len[] = {4, 7, 1, 3};
static const double holm_out[][8] = {
	{0.029999999999999999, 0.059999999999999998, 0.059999999999999998, 0.02, 0, 0, 0, 0},
	{1, 0.60000000000000009, 1, 0.059999999999999998, 0.059999999999999998, 0.19600000000000001, 7.0000000000000001e-12, 0},
	{0.29999999999999999, 0, 0, 0, 0, 0, 0, 0},
	{0.059999999999999998, 0.059999999999999998, 0.059999999999999998, 0, 0, 0, 0, 0},
};
static const struct ref_srm srm_ref[] = {
	{2, {5000, 5000, 0, 0}, {1, 1, 0, 0}, 0, 1, 0},
	{2, {5100, 4900, 0, 0}, {0.5, 0.5, 0, 0}, 4, 0.04550026389635857, 0},
	{2, {5300, 4700, 0, 0}, {1, 1, 0, 0}, 36, 1.9731752900753933e-09, 1},
	{3, {3400, 3300, 3300, 0}, {1, 1, 1, 0}, 2, 0.36787944117144245, 0},
	{2, {2010, 5990, 0, 0}, {0.25, 0.75, 0, 0}, 0.066666666666666666, 0.79625341473763922, 0},
	{4, {1000, 1100, 900, 1000}, {1, 1, 1, 1}, 20, 0.00016974243555282632, 1},
};
static const struct ref_plan plan_prop_ref[] = {
	{0.10000000000000001, 0.050000000000000003, 1, 0.050000000000000003, 0.80000000000000004, 2, 2, 57762.651454129373},
	{0.10000000000000001, 0.01, 0, 0.050000000000000003, 0.80000000000000004, 2, 2, 14750.790469044945},
	{0.029999999999999999, 0.10000000000000001, 1, 0.050000000000000003, 0.90000000000000002, 1, 2, 58056.727924841667},
	{0.25, 0.02, 0, 0.01, 0.80000000000000004, 2, 4, 13720.738896093022},
	{0.5, -0.040000000000000001, 0, 0.050000000000000003, 0.80000000000000004, 2, 3, 2964.2737170965938},
};
static const struct ref_plan_mean plan_mean_ref[] = {
	{100, 0.02, 1, 0.050000000000000003, 0.80000000000000004, 2, 2, 30, 3531.9958804570911},
	{100, 1.5, 0, 0.050000000000000003, 0.90000000000000002, 1, 2, 25, 4757.6929725933223},
	{12, 0.5, 0, 0.01, 0.80000000000000004, 2, 5, 4, 1912.055867660227},
};
/* mSPRT, means: Lambda by quad, CI bounds by brentq on it */
static const double msprt_tau2 = 0.01, msprt_alpha = 0.050000000000000003;
static const struct ref_msprt msprt_ref[] = {
	{50, 0.87637250204745432, 0.73852903341189435, 50, 0.96965685154045955, 1.2011366823864527, 0.91239130205144059, 1, -0.99184639436887068, 1.178415093354882},
	{100, 1.024665490320871, 0.84812955342839547, 100, 0.90292230979565213, 1.3060390984519465, 0.92164725614267073, 1, -0.77977504948245024, 0.53628868843201249},
	{200, 1.0163603752616512, 0.85517763425789795, 200, 1.0841220643986462, 1.3389890408617195, 0.79918960037187914, 1, -0.32307080261705051, 0.45859418089104048},
	{400, 1.0446861113624311, 0.93024570688638908, 400, 1.0304372075240302, 1.3953471205276227, 0.61307184816823646, 1, -0.26779741981349126, 0.23929961213668957},
	{800, 1.006759071979888, 0.98288595623189101, 800, 1.0710385803280789, 1.3968553045712209, 0.81778581158904906, 1, -0.10545241245139453, 0.23401142914777628},
	{1600, 1.0018514426981744, 0.99815391802129827, 1600, 1.1264890511874053, 1.5011974102388892, 27.104546672830445, 0.036894179123180042, 0.0044854937759553322, 0.23401142914777628},
	{2400, 1.0103746581769266, 1.0068962360633487, 2400, 1.1157356296242309, 1.4872610506762403, 38.731349792645943, 0.025818878127244444, 0.0074605979115837896, 0.20326134498302473},
	{3200, 1.0151764262857397, 1.0123529593988594, 3200, 1.1075974692344002, 1.4795652228560519, 43.567941162419928, 0.02295265677742336, 0.0074605979115837896, 0.17747753594260915},
	{4000, 1.0118306463940003, 0.99984213165381697, 4000, 1.1004472347404599, 1.4816016361789763, 93.641710784608534, 0.010679001821102627, 0.012336040516504514, 0.16489713617641466},
};
static const double msprt_prop_tau2 = 0.00040000000000000002, msprt_prop_alpha = 0.050000000000000003;
static const struct ref_msprt_prop msprt_prop_ref[] = {
	{500, 57, 500, 52, 0.74925126068156778, 1},
	{1000, 111, 1000, 119, 0.64448811202703626, 1},
	{2000, 218, 2000, 233, 0.56007276477960422, 1},
	{5000, 533, 5000, 608, 3.796985748863797, 0.26336680360184078},
	{10000, 1035, 10000, 1160, 9.7754365287442209, 0.10229722192554226},
	{20000, 2027, 20000, 2389, 1843100.4939954495, 5.4256401279140936e-07},
};
static const struct ref_bayes bayes_ref[] = {
	{1, 1, 1000, 100, 1000, 130, 0.98216506611634902, 9.2374491504703467e-05, 0.030032494251983739},
	{1, 1, 20000, 1000, 21000, 1120, 0.93612474128997991, 6.088078483059045e-05, 0.003391754249240922},
	{0.5, 0.5, 40, 0, 45, 2, 0.91390404893913146, 0.0016388592212663964, 0.043791563357003911},
	{1, 1, 10, 3, 12, 4, 0.5555256427513795, 0.060913152446333198, 0.084722676255856999},
	{2, 8, 300, 31, 280, 30, 0.56037831348804723, 0.0082642867609551349, 0.012157501443936276},
	{1, 1, 1000000, 31000, 1000000, 30500, 0.02028394381781579, 0.00050182052707668269, 1.8215270746403196e-06},
	{0.20000000000000001, 0.20000000000000001, 5, 0, 5, 5, 0.99997127685028697, 2.2428203422870288e-06, 0.92592816874628459},
	{1, 1, 50000, 25000, 50000, 25400, 0.99429507197106226, 5.7745677786891879e-06, 0.0080054545805796472},
	{1, 1, 3, 3, 200000, 2, 5.7377332835452524e-157, 0.79998500014999852, 2.8803402045373001e-162},
	{1, 1, 2435, 235, 2435, 157, 1.9326082750399294e-05, 0.032006598802697586, 3.3353374548418246e-08},
};
static const double best_s[] = {120, 130, 100, 128};
static const double best_f[] = {880, 870, 900, 872};
static const double best_ref[] = {0.13518436055046068, 0.47921456547535024, 0.0024022108846285584, 0.38319886308955992};
static const double best_loss_ref[] = {0.015968198396530769, 0.0059881584763710749, 0.035928278236850131, 0.007984166460403036};
static const struct ref_normal_post normal_post_ref[] = {
	{100, 10, 4, 120, 10.300000000000001, 6, 0.8413447460685437, 0.024994641176305774, 0.3249946411763065},
	{10000, 5, 1, 10000, 4.9900000000000002, 2, 0.28185143082539066, 0.013030575363428215, 0.0030305753634284286},
	{50, 0, 1, 50, 0, 1, 0.5, 0.079788456080286549, 0.079788456080286549},
	{10, 1, 0.10000000000000001, 10, 2, 0.10000000000000001, 0.9999999999992315, 1.4813429336849299e-14, 1.0000000000000149},
};
static const double cuped_theta = 0.79839009405480155;
static const struct ref_cuped_sums cuped_sums[] = {
	{1500, 30207.295831075502, 31685.932235636094, 631296.45837374416, 690677.24232045352, 656643.72849744512},
	{1400, 27850.579924146536, 30145.997319266848, 576259.68084899837, 669276.10681244277, 617683.70472012996},
	{1600, 31873.325630414089, 33833.673421707703, 661773.72173908423, 738346.35867473169, 695070.59472614538},
};
static const struct ref_cuped cuped_ref[] = {
	{1, 21.001413280112629, 4.2537539970345026, 21.605860053888147, 4.0018959107409451, 8.0100758867488775, 1.6453954671213252e-15, 0.45648442547411211, 0.75240912207693045},
	{2, 21.001413280112629, 4.2537539970345026, 21.197049363123927, 3.9694381923244175, 2.6830357349699714, 0.0073348714523755439, 0.052667054202576585, 0.33860511182002606},
};
/* END GENERATED */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int failures;

static void report(double got, double want, double err, double tol, const char *fmt, va_list ap)
{
	vprintf(fmt, ap);
	printf(": got %.17g want %.17g (err %.3g > %.3g)\n", got, want, err, tol);
	failures++;
}

/* Relative error (absolute when want is 0); equal infinities pass. */
static void rel_near(double got, double want, double tol, const char *fmt, ...)
{
	if (isinf(want) && got == want)
		return;
	double err = want == 0 ? fabs(got) : fabs(got - want) / fabs(want);
	if (err <= tol)
		return;
	va_list ap;
	va_start(ap, fmt);
	report(got, want, err, tol, fmt, ap);
	va_end(ap);
}

static void abs_near(double got, double want, double tol, const char *fmt, ...)
{
	if (isinf(want) && got == want)
		return;
	double err = fabs(got - want);
	if (err <= tol)
		return;
	va_list ap;
	va_start(ap, fmt);
	report(got, want, err, tol, fmt, ap);
	va_end(ap);
}

/* |got - want| <= tol * max(1, |want|) */
static void scaled_near(double got, double want, double tol, const char *fmt, ...)
{
	if (isinf(want) && got == want)
		return;
	double err = fabs(got - want) / (fabs(want) > 1 ? fabs(want) : 1);
	if (err <= tol)
		return;
	va_list ap;
	va_start(ap, fmt);
	report(got, want, err, tol, fmt, ap);
	va_end(ap);
}

static void check_prop(const struct ref_prop *r, const struct sx_abtest_lift *o, const char *what)
{
	rel_near(o->control, r->pa, 1e-12, "%s: control rate", what);
	rel_near(o->treatment, r->pb, 1e-12, "%s: treatment rate", what);
	abs_near(o->diff, r->diff, 1e-12, "%s: diff", what);
	abs_near(o->rel, r->rel, 1e-12, "%s: rel", what);
	rel_near(o->stat, r->z, 1e-9, "%s: z", what);
	rel_near(o->p_value, r->p, 1e-9, "%s: p", what);
	rel_near(o->se, r->se, 1e-9, "%s: se", what);
	abs_near(o->diff_lo, r->lo, 1e-9, "%s: diff_lo", what);
	abs_near(o->diff_hi, r->hi, 1e-9, "%s: diff_hi", what);
	abs_near(o->rel_lo, r->rlo, 1e-9, "%s: rel_lo", what);
	abs_near(o->rel_hi, r->rhi, 1e-9, "%s: rel_hi", what);
}

static void test_prop_ztest(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(prop_ref); i++) {
		const struct ref_prop *r = &prop_ref[i];
		struct sx_abtest_lift o;
		char what[64];
		snprintf(what, sizeof(what), "prop case %zu", i);
		assert_int_equal(sx_abtest_prop_ztest(r->na, r->xa, r->nb, r->xb, r->alpha, (int)r->alt, &o), 0);
		check_prop(r, &o, what);
		assert_true(isinf(o.df));
	}
	assert_int_equal(failures, 0);
}

/* The call-back rate by ethnicity of the resume field experiment, counted
 * from the CSV, as a conversion test: control "cauc", treatment "afam". */
static void read_resume(double n[2], double x[2])
{
	const char *src = getenv("SX_SOURCE_DIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/../shared/data/resume_names_callback_experiment.csv",
		 src ? src : SX_SOURCE_DIR);
	FILE *fp = fopen(path, "r");
	if (!fp)
		fail_msg("cannot open %s: the data set is required", path);
	char line[4096];
	int eth = -1, call = -1, rows = 0;
	n[0] = n[1] = x[0] = x[1] = 0;
	while (fgets(line, sizeof(line), fp)) {
		char *field[64];
		int nf = 0;
		char *p = line;
		while (nf < 64) {
			/* Fields are either quoted without inner quotes or bare. */
			if (*p == '"') {
				field[nf++] = ++p;
				p = strchr(p, '"');
				if (!p)
					break;
				*p++ = '\0';
			} else {
				field[nf++] = p;
				p += strcspn(p, ",\r\n");
			}
			if (*p != ',') {
				*p = '\0';
				break;
			}
			*p++ = '\0';
		}
		if (eth < 0) {
			for (int i = 0; i < nf; i++) {
				if (strcmp(field[i], "ethnicity") == 0)
					eth = i;
				if (strcmp(field[i], "call") == 0)
					call = i;
			}
			assert_true(eth >= 0 && call >= 0);
			continue;
		}
		assert_true(nf > eth && nf > call);
		int arm = strcmp(field[eth], "cauc") == 0 ? 0 : strcmp(field[eth], "afam") == 0 ? 1 : -1;
		assert_true(arm >= 0);
		n[arm] += 1;
		x[arm] += strcmp(field[call], "yes") == 0;
		rows++;
	}
	fclose(fp);
	assert_int_equal(rows, 4870);
}

static void test_resume_data(void **state)
{
	(void)state;
	double n[2], x[2];
	read_resume(n, x);
	const struct ref_prop *r = &prop_ref[N_OF(prop_ref) - 1];
	assert_true(n[0] == r->na && x[0] == r->xa && n[1] == r->nb && x[1] == r->xb);
	failures = 0;
	struct sx_abtest_lift o;
	assert_int_equal(sx_abtest_prop_ztest(n[0], x[0], n[1], x[1], 0.05, SX_ABTEST_TWO_SIDED, &o), 0);
	check_prop(r, &o, "resume");
	assert_true(o.p_value < 1e-4 && o.diff_hi < 0);

	const struct ref_chi2_ind *c = &chi2_ind_ref[N_OF(chi2_ind_ref) - 1];
	struct sx_abtest_chi2 chi;
	assert_int_equal(sx_abtest_chi2_indep(n, x, 2, 0, &chi), 0);
	rel_near(chi.stat, c->chi2, 1e-9, "resume chi2");
	rel_near(chi.p_value, c->p, 1e-9, "resume chi2 p");
	/* Without Yates the 2 x 2 chi-square is the square of the pooled z. */
	rel_near(chi.stat, o.stat * o.stat, 1e-12, "chi2 = z^2");

	const struct ref_bayes *b = &bayes_ref[N_OF(bayes_ref) - 1];
	struct sx_abtest_bayes_arm arms[2];
	assert_int_equal(sx_abtest_bayes_beta(n, x, 2, 1, 1, arms), 0);
	abs_near(arms[1].prob_beat_control, b->prob, 1e-9, "resume P(afam > cauc)");
	abs_near(arms[1].loss_vs_control, b->loss_choose, 1e-9, "resume loss");
	assert_int_equal(failures, 0);
}

static void test_welch(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(welch_ref); i++) {
		const struct ref_welch *r = &welch_ref[i];
		struct sx_abtest_summary a = {r->na, r->ma, r->va}, b = {r->nb, r->mb, r->vb};
		struct sx_abtest_lift o;
		assert_int_equal(sx_abtest_welch(&a, &b, r->alpha, (int)r->alt, &o), 0);
		abs_near(o.diff, r->d, 1e-12, "welch %zu diff", i);
		abs_near(o.rel, r->rel, 1e-12, "welch %zu rel", i);
		rel_near(o.stat, r->t, 1e-9, "welch %zu t", i);
		rel_near(o.df, r->df, 1e-9, "welch %zu df", i);
		rel_near(o.p_value, r->p, 1e-9, "welch %zu p", i);
		rel_near(o.se, r->se, 1e-9, "welch %zu se", i);
		scaled_near(o.diff_lo, r->lo, 1e-7, "welch %zu lo", i);
		scaled_near(o.diff_hi, r->hi, 1e-7, "welch %zu hi", i);
		scaled_near(o.rel_lo, r->rlo, 1e-7, "welch %zu rel_lo", i);
		scaled_near(o.rel_hi, r->rhi, 1e-7, "welch %zu rel_hi", i);
	}
	const struct ref_welch_raw *r = &welch_raw_ref[0];
	struct sx_abtest_summary a = {r->na, r->ma, r->va}, b = {r->nb, r->mb, r->vb};
	struct sx_abtest_lift o;
	assert_int_equal(sx_abtest_welch(&a, &b, 0.05, SX_ABTEST_TWO_SIDED, &o), 0);
	rel_near(o.stat, r->t, 1e-9, "welch raw t");
	rel_near(o.p_value, r->p, 1e-9, "welch raw p");
	scaled_near(o.diff_lo, r->lo, 1e-7, "welch raw lo");
	scaled_near(o.diff_hi, r->hi, 1e-7, "welch raw hi");
	assert_int_equal(failures, 0);
}

static void test_chi2_indep(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(chi2_ind_ref); i++) {
		const struct ref_chi2_ind *r = &chi2_ind_ref[i];
		struct sx_abtest_chi2 o;
		assert_int_equal(sx_abtest_chi2_indep(r->n, r->x, (size_t)r->k, (int)r->yates, &o), 0);
		rel_near(o.stat, r->chi2, 1e-9, "chi2_indep %zu stat", i);
		rel_near(o.df, r->df, 0, "chi2_indep %zu df", i);
		rel_near(o.p_value, r->p, 1e-9, "chi2_indep %zu p", i);
	}
	assert_int_equal(failures, 0);
	double n[2] = {10, 20}, x[2] = {0, 0};
	struct sx_abtest_chi2 o;
	assert_int_equal(sx_abtest_chi2_indep(n, x, 2, 0, &o), SX_EINVAL);
	assert_non_null(strstr(sx_diag_last(), "empty column"));
	assert_int_equal(sx_abtest_chi2_indep(n, x, 1, 0, &o), SX_EINVAL);
}

static void test_holm(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(holm_len); i++) {
		double adj[8];
		assert_int_equal(sx_abtest_holm(holm_in[i], holm_len[i], adj), 0);
		for (size_t j = 0; j < holm_len[i]; j++)
			rel_near(adj[j], holm_out[i][j], 1e-15, "holm %zu[%zu]", i, j);
	}
	double p[3] = {0.01, 0.5, 0.02};
	assert_int_equal(sx_abtest_holm(p, 3, p), 0);
	rel_near(p[0], 0.03, 1e-15, "holm in place");
	rel_near(p[2], 0.04, 1e-15, "holm in place");
	rel_near(p[1], 0.5, 1e-15, "holm in place");
	assert_int_equal(failures, 0);
	double badp[2] = {0.1, 1.5};
	assert_int_equal(sx_abtest_holm(badp, 2, badp), SX_EINVAL);
	badp[1] = NAN;
	assert_int_equal(sx_abtest_holm(badp, 2, badp), SX_EINVAL);
	assert_int_equal(sx_abtest_holm(badp, 0, badp), SX_EINVAL);
}

static void test_srm(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(srm_ref); i++) {
		const struct ref_srm *r = &srm_ref[i];
		struct sx_abtest_srm o;
		assert_int_equal(sx_abtest_srm(r->c, r->w, (size_t)r->k, 0, &o), 0);
		abs_near(o.stat, r->chi2, 1e-9, "srm %zu stat", i);
		rel_near(o.p_value, r->p, 1e-9, "srm %zu p", i);
		assert_int_equal(o.mismatch, (int)r->flag);
	}
	assert_int_equal(failures, 0);
	/* 5100 / 4900 has p = 0.0455: a mismatch only at a looser threshold. */
	struct sx_abtest_srm o;
	double c[2] = {5100, 4900};
	assert_int_equal(sx_abtest_srm(c, NULL, 2, 0.05, &o), 0);
	assert_true(o.mismatch);
	assert_int_equal(sx_abtest_srm(c, NULL, 2, 0, &o), 0);
	assert_false(o.mismatch);
	double w[2] = {1, -1};
	assert_int_equal(sx_abtest_srm(c, w, 2, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_srm(c, NULL, 2, 1.5, &o), SX_EINVAL);
}

static void test_plan(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(plan_prop_ref); i++) {
		const struct ref_plan *r = &plan_prop_ref[i];
		struct sx_abtest_plan p = {
			.baseline = r->base, .mde = r->mde,
			.mde_kind = r->rel ? SX_ABTEST_MDE_RELATIVE : SX_ABTEST_MDE_ABSOLUTE,
			.alpha = r->alpha, .power = r->power, .sides = (int)r->sides,
			.variants = (int)r->variants, .daily_traffic = 1000,
		};
		struct sx_abtest_plan_result o;
		assert_int_equal(sx_abtest_plan_props(&p, &o), 0);
		rel_near(o.n_per_arm, r->n, 1e-9, "plan props %zu", i);
		assert_true(o.n_per_arm_ceil == ceil(r->n));
		assert_true(o.n_total == ceil(r->n) * r->variants);
		assert_true(o.days == ceil(ceil(r->n) * r->variants / 1000));
	}
	for (size_t i = 0; i < N_OF(plan_mean_ref); i++) {
		const struct ref_plan_mean *r = &plan_mean_ref[i];
		struct sx_abtest_plan p = {
			.baseline = r->base, .mde = r->mde,
			.mde_kind = r->rel ? SX_ABTEST_MDE_RELATIVE : SX_ABTEST_MDE_ABSOLUTE,
			.alpha = r->alpha, .power = r->power, .sides = (int)r->sides,
			.variants = (int)r->variants, .sd = r->sd,
		};
		struct sx_abtest_plan_result o;
		assert_int_equal(sx_abtest_plan_means(&p, &o), 0);
		rel_near(o.n_per_arm, r->n, 1e-9, "plan means %zu", i);
		assert_true(o.days == 0);
	}
	assert_int_equal(failures, 0);

	/* A relative and an absolute mde that mean the same difference agree. */
	struct sx_abtest_plan p = {.baseline = 0.2, .mde = 0.1, .mde_kind = SX_ABTEST_MDE_RELATIVE,
				   .alpha = 0.05, .power = 0.8, .sides = 2, .variants = 2};
	struct sx_abtest_plan_result r1, r2;
	assert_int_equal(sx_abtest_plan_props(&p, &r1), 0);
	p.mde = 0.02;
	p.mde_kind = SX_ABTEST_MDE_ABSOLUTE;
	assert_int_equal(sx_abtest_plan_props(&p, &r2), 0);
	assert_true(fabs(r1.n_per_arm - r2.n_per_arm) < 1e-9 * r2.n_per_arm);
	p.mde = 0.9; /* 0.2 + 0.9 is no rate */
	assert_int_equal(sx_abtest_plan_props(&p, &r2), SX_EINVAL);
	p.mde = 0.02;
	p.variants = 1;
	assert_int_equal(sx_abtest_plan_props(&p, &r2), SX_EINVAL);
	p.variants = 2;
	p.power = 1;
	assert_int_equal(sx_abtest_plan_props(&p, &r2), SX_EINVAL);
	p.power = 0.8;
	assert_int_equal(sx_abtest_plan_means(&p, &r2), SX_EINVAL); /* no sd */
}

static void test_msprt(void **state)
{
	(void)state;
	failures = 0;
	struct sx_abtest_msprt s;
	assert_int_equal(sx_abtest_msprt_init(&s, msprt_tau2, msprt_alpha, 0), 0);
	assert_true(s.p_value == 1 && isinf(s.ci_lo) && isinf(s.ci_hi));
	for (size_t i = 0; i < N_OF(msprt_ref); i++) {
		const struct ref_msprt *r = &msprt_ref[i];
		struct sx_abtest_summary a = {r->na, r->ma, r->va}, b = {r->nb, r->mb, r->vb};
		assert_int_equal(sx_abtest_msprt_update_means(&s, &a, &b), 0);
		rel_near(s.lambda, r->lambda, 1e-8, "msprt %zu lambda", i);
		rel_near(s.p_value, r->p, 1e-8, "msprt %zu p", i);
		abs_near(s.ci_lo, r->lo, 1e-9, "msprt %zu lo", i);
		abs_near(s.ci_hi, r->hi, 1e-9, "msprt %zu hi", i);
	}
	assert_true(s.updates == N_OF(msprt_ref));
	assert_int_equal(sx_abtest_msprt_init(&s, msprt_prop_tau2, msprt_prop_alpha, 0), 0);
	for (size_t i = 0; i < N_OF(msprt_prop_ref); i++) {
		const struct ref_msprt_prop *r = &msprt_prop_ref[i];
		assert_int_equal(sx_abtest_msprt_update_props(&s, r->na, r->xa, r->nb, r->xb), 0);
		rel_near(s.lambda, r->lambda, 1e-8, "msprt prop %zu lambda", i);
		rel_near(s.p_value, r->p, 1e-8, "msprt prop %zu p", i);
	}
	assert_int_equal(failures, 0);

	/* Zero variance carries no evidence. */
	assert_int_equal(sx_abtest_msprt_init(&s, 1, 0.05, 0), 0);
	assert_int_equal(sx_abtest_msprt_update_props(&s, 10, 0, 10, 0), 0);
	assert_true(s.p_value == 1 && isinf(s.ci_hi));
	assert_int_equal(sx_abtest_msprt_update(&s, NAN, 1), SX_EINVAL);
	assert_int_equal(sx_abtest_msprt_update(&s, 0, -1), SX_EINVAL);
	assert_int_equal(sx_abtest_msprt_init(&s, 0, 0.05, 0), SX_EINVAL);
	assert_int_equal(sx_abtest_msprt_init(&s, 1, 1, 0), SX_EINVAL);
}

/* Under H0 the always-valid p-value, monitored after every batch, falls
 * below alpha in at most ~alpha of the experiments. */
static void test_msprt_type1(void **state)
{
	(void)state;
	struct sx_stats_rng rng;
	sx_stats_rng_seed(&rng, 2024);
	int rejections = 0, runs = 400;
	for (int r = 0; r < runs; r++) {
		struct sx_abtest_msprt s;
		assert_int_equal(sx_abtest_msprt_init(&s, 0.0004, 0.05, 0), 0);
		double xa = 0, xb = 0, n = 0;
		for (int look = 0; look < 40; look++) {
			for (int u = 0; u < 100; u++) {
				xa += sx_stats_rng_uniform(&rng) < 0.1;
				xb += sx_stats_rng_uniform(&rng) < 0.1;
			}
			n += 100;
			assert_int_equal(sx_abtest_msprt_update_props(&s, n, xa, n, xb), 0);
		}
		rejections += s.p_value < 0.05;
	}
	/* 0.05 * 400 = 20 expected at most; allow Monte Carlo noise. */
	assert_true(rejections <= 32);
}

static void test_bayes_beta(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(bayes_ref); i++) {
		const struct ref_bayes *r = &bayes_ref[i];
		double n[2] = {r->na, r->nb}, x[2] = {r->xa, r->xb};
		struct sx_abtest_bayes_arm o[2];
		assert_int_equal(sx_abtest_bayes_beta(n, x, 2, r->a0, r->b0, o), 0);
		abs_near(o[1].prob_beat_control, r->prob, 1e-9, "bayes %zu P(b > a)", i);
		abs_near(o[1].prob_best, r->prob, 1e-9, "bayes %zu P(b best)", i);
		abs_near(o[0].prob_best, 1 - r->prob, 1e-9, "bayes %zu P(a best)", i);
		abs_near(o[1].loss_vs_control, r->loss_choose, 1e-9, "bayes %zu loss choose", i);
		abs_near(o[1].loss_vs_best, r->loss_choose, 1e-9, "bayes %zu loss vs best", i);
		abs_near(o[0].loss_vs_best, r->loss_keep, 1e-9, "bayes %zu loss keep", i);
		assert_true(isnan(o[0].prob_beat_control));
		rel_near(o[1].mean, (r->a0 + r->xb) / (r->a0 + r->b0 + r->nb), 1e-15, "mean");
	}
	double n[4], x[4];
	for (int i = 0; i < 4; i++) {
		n[i] = best_s[i] + best_f[i];
		x[i] = best_s[i];
	}
	struct sx_abtest_bayes_arm o[4], oc[4];
	assert_int_equal(sx_abtest_bayes_beta(n, x, 4, 1, 1, o), 0);
	/* the control-only variant gives the same figures, and no others */
	assert_int_equal(sx_abtest_bayes_beta_control(n, x, 4, 1, 1, oc), 0);
	for (int i = 0; i < 4; i++) {
		assert_true(oc[i].mean == o[i].mean && oc[i].loss_vs_control == o[i].loss_vs_control);
		assert_true(i == 0 ? isnan(oc[i].prob_beat_control) : oc[i].prob_beat_control == o[i].prob_beat_control);
		assert_true(isnan(oc[i].prob_best) && isnan(oc[i].loss_vs_best));
	}
	double sum = 0;
	for (int i = 0; i < 4; i++) {
		abs_near(o[i].prob_best, best_ref[i], 1e-9, "4 arms P(best %d)", i);
		abs_near(o[i].loss_vs_best, best_loss_ref[i], 1e-9, "4 arms loss %d", i);
		sum += o[i].prob_best;
	}
	abs_near(sum, 1, 1e-9, "P(best) sums to 1");
	assert_int_equal(failures, 0);

	double bn[2] = {10, 0}, bx[2] = {3, 0};
	assert_int_equal(sx_abtest_bayes_beta(bn, bx, 2, 1, 1, o), SX_EINVAL);
	bn[1] = 10;
	bx[1] = 11;
	assert_int_equal(sx_abtest_bayes_beta(bn, bx, 2, 1, 1, o), SX_EINVAL);
	bx[1] = 1;
	assert_int_equal(sx_abtest_bayes_beta(bn, bx, 2, 0, 1, o), SX_EINVAL);
}

static void test_bayes_normal(void **state)
{
	(void)state;
	failures = 0;
	for (size_t i = 0; i < N_OF(normal_post_ref); i++) {
		const struct ref_normal_post *r = &normal_post_ref[i];
		struct sx_abtest_summary a = {r->na, r->ma, r->va}, b = {r->nb, r->mb, r->vb};
		struct sx_abtest_bayes_normal o;
		assert_int_equal(sx_abtest_bayes_normal(&a, &b, &o), 0);
		abs_near(o.prob_beat, r->prob, 1e-9, "normal %zu P", i);
		abs_near(o.loss_choose, r->loss_choose, 1e-9, "normal %zu loss choose", i);
		abs_near(o.loss_keep, r->loss_keep, 1e-9, "normal %zu loss keep", i);
	}
	assert_int_equal(failures, 0);
}

static void test_cuped(void **state)
{
	(void)state;
	failures = 0;
	struct sx_abtest_cuped_sums v[3];
	for (int i = 0; i < 3; i++)
		v[i] = (struct sx_abtest_cuped_sums){cuped_sums[i].n, cuped_sums[i].sx, cuped_sums[i].sy,
						     cuped_sums[i].sxx, cuped_sums[i].syy, cuped_sums[i].sxy};
	struct sx_abtest_summary adj[3];
	double theta;
	assert_int_equal(sx_abtest_cuped(v, 3, &theta, adj), 0);
	rel_near(theta, cuped_theta, 1e-9, "cuped theta");
	for (size_t i = 0; i < N_OF(cuped_ref); i++) {
		const struct ref_cuped *r = &cuped_ref[i];
		size_t k = (size_t)r->i;
		rel_near(adj[0].mean, r->ma, 1e-9, "cuped control mean");
		rel_near(adj[0].var, r->va, 1e-9, "cuped control var");
		rel_near(adj[k].mean, r->mb, 1e-9, "cuped %zu mean", k);
		rel_near(adj[k].var, r->vb, 1e-9, "cuped %zu var", k);
		struct sx_abtest_lift o;
		assert_int_equal(sx_abtest_welch(&adj[0], &adj[k], 0.05, SX_ABTEST_TWO_SIDED, &o), 0);
		rel_near(o.stat, r->t, 1e-9, "cuped %zu t", k);
		rel_near(o.p_value, r->p, 1e-8, "cuped %zu p", k);
		scaled_near(o.diff_lo, r->lo, 1e-7, "cuped %zu lo", k);
		scaled_near(o.diff_hi, r->hi, 1e-7, "cuped %zu hi", k);
	}
	assert_int_equal(failures, 0);
	/* The adjustment shrinks the variance (x explains much of y here). */
	assert_true(adj[0].var < (v[0].syy - v[0].sy * v[0].sy / v[0].n) / (v[0].n - 1) / 2);
	v[1].n = 1;
	assert_int_equal(sx_abtest_cuped(v, 3, &theta, adj), SX_EINVAL);
	struct sx_abtest_cuped_sums flat[2] = {{3, 3, 1, 3, 1, 1}, {3, 3, 2, 3, 2, 2}};
	assert_int_equal(sx_abtest_cuped(flat, 2, &theta, adj), SX_EINVAL);
	assert_non_null(strstr(sx_diag_last(), "constant"));
}

static void test_thompson(void **state)
{
	(void)state;
	failures = 0;
	double exact[4], mc[4], mc2[4];
	assert_int_equal(sx_abtest_prob_best(best_s, best_f, 4, 1, 1, exact), 0);
	for (int i = 0; i < 4; i++)
		abs_near(exact[i], best_ref[i], 1e-9, "prob_best %d", i);
	const uint64_t draws = 200000;
	assert_int_equal(sx_abtest_thompson_mc(best_s, best_f, 4, 1, 1, draws, 7, mc), 0);
	assert_int_equal(sx_abtest_thompson_mc(best_s, best_f, 4, 1, 1, draws, 7, mc2), 0);
	for (int i = 0; i < 4; i++) {
		double se = sqrt(best_ref[i] * (1 - best_ref[i]) / (double)draws);
		abs_near(mc[i], best_ref[i], 5 * se + 1e-6, "thompson mc %d", i);
		assert_true(mc[i] == mc2[i]);
	}
	assert_int_equal(failures, 0);

	struct sx_stats_rng rng;
	sx_stats_rng_seed(&rng, 99);
	int count[4] = {0};
	for (int i = 0; i < 20000; i++) {
		size_t arm;
		assert_int_equal(sx_abtest_thompson_choose(best_s, best_f, 4, 1, 1, &rng, &arm), 0);
		assert_true(arm < 4);
		count[arm]++;
	}
	for (int i = 0; i < 4; i++) {
		double se = sqrt(best_ref[i] * (1 - best_ref[i]) / 20000);
		assert_true(fabs(count[i] / 20000.0 - best_ref[i]) < 5 * se + 1e-4);
	}
	double one = 5, onef = 5;
	double p1;
	assert_int_equal(sx_abtest_prob_best(&one, &onef, 1, 1, 1, &p1), 0);
	assert_true(p1 == 1);
	double bad_s[2] = {1, -1}, bad_f[2] = {1, 1};
	assert_int_equal(sx_abtest_prob_best(bad_s, bad_f, 2, 1, 1, mc), SX_EINVAL);
	assert_int_equal(sx_abtest_thompson_mc(best_s, best_f, 4, 1, 1, 0, 1, mc), SX_EINVAL);
	static double many_s[SX_ABTEST_MAX_ARMS + 1], many_f[SX_ABTEST_MAX_ARMS + 1];
	static double many_p[SX_ABTEST_MAX_ARMS + 1];
	assert_int_equal(sx_abtest_prob_best(many_s, many_f, SX_ABTEST_MAX_ARMS + 1, 1, 1, many_p),
			 SX_EINVAL);
}

static void test_bad_input(void **state)
{
	(void)state;
	struct sx_abtest_lift o;
	sx_diag_clear();
	assert_int_equal(sx_abtest_prop_ztest(0, 0, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_true(strlen(sx_diag_last()) > 0);
	assert_int_equal(sx_abtest_prop_ztest(-5, 0, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(10, 11, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(10, -1, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(NAN, 1, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(10, NAN, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(INFINITY, 1, 10, 1, 0.05, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(10, 1, 10, 1, 1.0, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(10, 1, 10, 1, NAN, 0, &o), SX_EINVAL);
	assert_int_equal(sx_abtest_prop_ztest(10, 1, 10, 1, 0.05, 2, &o), SX_EINVAL);
	struct sx_abtest_summary a = {1, 0, 1}, b = {10, 0, 1};
	assert_int_equal(sx_abtest_welch(&a, &b, 0.05, 0, &o), SX_EINVAL);
	a.n = 10;
	a.var = -1;
	assert_int_equal(sx_abtest_welch(&a, &b, 0.05, 0, &o), SX_EINVAL);
	a.var = NAN;
	assert_int_equal(sx_abtest_welch(&a, &b, 0.05, 0, &o), SX_EINVAL);
	a.var = 0;
	b.var = 0;
	assert_int_equal(sx_abtest_welch(&a, &b, 0.05, 0, &o), SX_EINVAL);
	a.mean = NAN;
	b.var = 1;
	assert_int_equal(sx_abtest_welch(&a, &b, 0.05, 0, &o), SX_EINVAL);

	/* Degenerate but valid: nothing converted anywhere. */
	assert_int_equal(sx_abtest_prop_ztest(100, 0, 100, 0, 0.05, 0, &o), 0);
	assert_true(o.stat == 0 && o.p_value == 1 && isnan(o.rel));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prop_ztest),
		cmocka_unit_test(test_resume_data),
		cmocka_unit_test(test_welch),
		cmocka_unit_test(test_chi2_indep),
		cmocka_unit_test(test_holm),
		cmocka_unit_test(test_srm),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_msprt),
		cmocka_unit_test(test_msprt_type1),
		cmocka_unit_test(test_bayes_beta),
		cmocka_unit_test(test_bayes_normal),
		cmocka_unit_test(test_cuped),
		cmocka_unit_test(test_thompson),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
